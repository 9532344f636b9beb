/*
 * pcap_funcs.c: the module functions of finprobe._core over trace.c:
 * write_pcap (what Trace.to_pcap calls), read_pcap (fp.read_pcap) and
 * wall_offset_ns. Files are read and written without the GIL.
 */
#include "core.h"

#include <math.h>

/* An OSError (FileNotFoundError ...) for errno e, with trace.c's message,
 * or fp.ParseError for a file that is not a capture finprobe reads. */
static PyObject *pcap_error(core_state *st, int e, const char *msg,
			    PyObject *path)
{
	if (e == ENOMEM)
		return PyErr_NoMemory();
	if (e == EBADMSG || e == EPROTONOSUPPORT) {
		PyErr_SetString(st->parse_error, msg);
		return NULL;
	}
	if (e == EINVAL) {
		PyErr_SetString(PyExc_ValueError, msg);
		return NULL;
	}
	PyObject *exc =
		PyObject_CallFunction(PyExc_OSError, "isO", e, msg, path);
	if (exc) {
		PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
		Py_DECREF(exc);
	}
	return NULL;
}

static PyObject *wall_offset_ns(PyObject *module, PyObject *Py_UNUSED(ignored))
{
	return PyLong_FromLongLong(fp_trace_wall_offset_ns());
}

/* One (packet, ts) pair into rec and view (released by the caller); ts is
 * float seconds, or int nanoseconds where they are known exactly. */
static int packet_arg(PyObject *item, Py_ssize_t i, struct fp_record *rec,
		      Py_buffer *view)
{
	PyObject *data, *ts;
	if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
		PyErr_Format(
			PyExc_TypeError,
			"packets[%zd] must be a (bytes, ts) pair, not %.100s",
			i, Py_TYPE(item)->tp_name);
		return -1;
	}
	data = PyTuple_GET_ITEM(item, 0);
	ts = PyTuple_GET_ITEM(item, 1);
	double seconds = PyLong_Check(ts) ? PyLong_AsDouble(ts) / 1e9
					  : PyFloat_AsDouble(ts);
	if (seconds == -1 && PyErr_Occurred())
		return -1;
	if (!(seconds >= 0 && seconds < 1e10)) {
		PyErr_Format(PyExc_ValueError,
			     "packets[%zd]: ts must be seconds >= 0, got %R", i,
			     ts);
		return -1;
	}
	uint64_t ns = PyLong_Check(ts) ? PyLong_AsUnsignedLongLong(ts)
				       : (uint64_t)llround(seconds * 1e9);
	if (PyErr_Occurred())
		return -1;
	if (PyUnicode_Check(data) ||
	    PyObject_GetBuffer(data, view, PyBUF_SIMPLE) < 0) {
		PyErr_Clear();
		PyErr_Format(
			PyExc_TypeError,
			"packets[%zd]: the packet must be bytes-like, not %.100s",
			i, Py_TYPE(data)->tp_name);
		return -1;
	}
	*rec = (struct fp_record){ ns, view->buf, (size_t)view->len, 0, 0, 0 };
	return 0;
}

/* write_pcap(path, packets, offset_ns=None): packets [(bytes, ts)] */
static PyObject *write_pcap(PyObject *module, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = { "path", "packets", "offset_ns", NULL };
	PyObject *path, *packets, *offset = Py_None, *result = NULL;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O&O|O:write_pcap", kw,
					 PyUnicode_FSConverter, &path, &packets,
					 &offset))
		return NULL;
	core_state *st = PyModule_GetState(module);
	long long offset_ns = offset == Py_None ? fp_trace_wall_offset_ns()
						: PyLong_AsLongLong(offset);
	PyObject *items = offset_ns == -1 && PyErr_Occurred()
				  ? NULL
				  : PySequence_Tuple(packets);
	Py_ssize_t n = items ? PyTuple_GET_SIZE(items) : 0, got = 0;
	struct fp_trace *trace = NULL;
	if (items && fp_trace_new(&trace) < 0)
		PyErr_NoMemory();
	/* copied in: no buffer is held past its item */
	for (; trace && got < n; got++) {
		struct fp_record rec;
		Py_buffer view;
		if (packet_arg(PyTuple_GET_ITEM(items, got), got, &rec, &view) <
		    0)
			break;
		int rc = fp_trace_append(trace, rec.pkt, rec.len, rec.ts_ns, 0,
					 0);
		PyBuffer_Release(&view);
		if (rc < 0) {
			PyErr_NoMemory();
			break;
		}
	}
	if (trace && got == n) {
		char err[256] = "";
		int rc;
		Py_BEGIN_ALLOW_THREADS
		rc = fp_trace_write_pcap(PyBytes_AS_STRING(path), trace,
					 offset_ns, err, sizeof(err));
		Py_END_ALLOW_THREADS
		result = rc < 0 ? pcap_error(st, -rc, err, path)
				: Py_NewRef(Py_None);
	}
	fp_trace_free(trace);
	Py_XDECREF(items);
	Py_DECREF(path);
	return result;
}

/* The (Segment, bytes, ts in ns) of a trace read from a file. */
static PyObject *trace_items(core_state *st, const struct fp_trace *t)
{
	size_t n = fp_trace_len(t);
	PyObject *list = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; list && i < n; i++) {
		struct fp_record rec;
		struct fp_segment seg;
		PyObject *item = NULL;
		if (fp_trace_get(t, i, &rec) == 0 &&
		    fp_segment_parse(&seg, rec.pkt, rec.len, NULL, 0) == 0)
			item = Py_BuildValue(
				"(Ny#K)",
				segment_new_from(st, &seg, ns_to_s(rec.ts_ns),
						 NULL),
				rec.pkt, (Py_ssize_t)rec.len,
				(unsigned long long)rec.ts_ns);
		else
			PyErr_SetString(
				st->parse_error,
				"a packet read could not be parsed again");
		if (!item) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, item);
	}
	return list;
}

/* read_pcap(path) -> ([(Segment, bytes, ts_ns)], skipped) */
static PyObject *read_pcap(PyObject *module, PyObject *arg)
{
	PyObject *path;
	if (!PyUnicode_FSConverter(arg, &path))
		return NULL;
	core_state *st = PyModule_GetState(module);
	struct fp_trace *t = NULL;
	char err[512] = "";
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = fp_trace_read_pcap(PyBytes_AS_STRING(path), &t, err, sizeof(err));
	Py_END_ALLOW_THREADS
	PyObject *result = NULL;
	if (rc < 0) {
		pcap_error(st, -rc, err, path);
	} else {
		PyObject *items = trace_items(st, t);
		result = items ? Py_BuildValue("(Nn)", items,
					       (Py_ssize_t)fp_trace_skipped(t))
			       : NULL;
	}
	fp_trace_free(t);
	Py_DECREF(path);
	return result;
}

PyMethodDef pcap_functions[] = {
	{ "write_pcap", (PyCFunction)(void (*)(void))write_pcap,
	  METH_VARARGS | METH_KEYWORDS,
	  "write_pcap(path, packets, offset_ns=None): [(IP packet, ts: float s or int ns)] to a pcap file "
	  "(LINKTYPE_RAW), stamped ts + offset (default: CLOCK_REALTIME - CLOCK_MONOTONIC)" },
	{ "read_pcap", (PyCFunction)read_pcap, METH_O,
	  "read_pcap(path) -> ([(Segment, IP packet, ts_ns)], skipped): the TCP packets of a pcap "
	  "or pcapng file, ts as in the file" },
	{ "wall_offset_ns", (PyCFunction)wall_offset_ns, METH_NOARGS,
	  "wall_offset_ns() -> CLOCK_REALTIME - CLOCK_MONOTONIC in ns" },
	{ NULL },
};
