/*
 * pcap_funcs.c: the module functions of finprobe._core over trace.c:
 * write_pcap (what Trace.to_pcap calls), pcap_open, pcap_read and
 * pcap_skipped (fp.read_pcap and fp.iter_pcap: a file a batch at a time)
 * and wall_offset_ns. Files are read and written without the GIL.
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

/* ---- reading: a file a batch at a time ------------------------------------ */

/* What a pcap_open capsule holds. busy: a batch is being read without the
 * GIL, by a thread that another must not run into. failed: the error that
 * ended the file after the packets a batch gave; the next read raises it. */
struct reader {
	struct fp_trace_reader *r;
	int busy;
	int failed;
	char err[512];
};

#define READER_CAPSULE "finprobe._core.pcap_reader"

static void reader_destroy(PyObject *capsule)
{
	struct reader *rd = PyCapsule_GetPointer(capsule, READER_CAPSULE);
	if (!rd)
		return;
	fp_trace_reader_close(rd->r);
	PyMem_Free(rd);
}

/* pcap_open(path) -> a reader for pcap_read; the file is opened now, so
 * that a missing one is named by the call that named it. */
static PyObject *pcap_open(PyObject *module, PyObject *arg)
{
	PyObject *path;
	if (!PyUnicode_FSConverter(arg, &path))
		return NULL;
	core_state *st = PyModule_GetState(module);
	struct reader *rd = PyMem_Calloc(1, sizeof(*rd));
	if (!rd) {
		Py_DECREF(path);
		return PyErr_NoMemory();
	}
	char err[512] = "";
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = fp_trace_reader_open(PyBytes_AS_STRING(path), &rd->r, err,
				  sizeof(err));
	Py_END_ALLOW_THREADS
	PyObject *capsule = NULL;
	if (rc < 0) {
		pcap_error(st, -rc, err, path);
		PyMem_Free(rd);
	} else if (!(capsule = PyCapsule_New(rd, READER_CAPSULE,
					     reader_destroy))) {
		fp_trace_reader_close(rd->r);
		PyMem_Free(rd);
	}
	Py_DECREF(path);
	return capsule;
}

/* Up to n packets of the file into batch, a fresh trace, without the GIL:
 * only the batch is ever held, never the file. An error after some
 * packets is kept for the next read, so that those packets come first,
 * as a stream gives them. */
static int read_batch(struct reader *rd, size_t n, struct fp_trace **batch)
{
	int rc = rd->failed ? rd->failed : fp_trace_new(batch);
	if (rc < 0) {
		if (!rd->failed)
			snprintf(rd->err, sizeof(rd->err), "out of memory");
		return rc;
	}
	struct fp_record rec;
	for (size_t got = 0; got < n; got++) {
		rc = fp_trace_reader_next(rd->r, &rec, rd->err,
					  sizeof(rd->err));
		if (rc == 1 && fp_trace_append(*batch, rec.pkt, rec.len,
					       rec.ts_ns, 0, 0) < 0) {
			snprintf(rd->err, sizeof(rd->err),
				 "out of memory after %zu packets", got);
			rc = -ENOMEM;
		}
		if (rc < 0 && got > 0) {
			rd->failed = rc;
			return 0;
		}
		if (rc <= 0)
			return rc;
	}
	return 0;
}

/* Item i of a batch appended to segments (and, unless None, its packet to
 * packets and its ns stamp to stamps). */
static int append_record(core_state *st, const struct fp_trace *batch, size_t i,
			 PyObject *segments, PyObject *packets,
			 PyObject *stamps)
{
	struct fp_record rec;
	struct fp_segment seg;
	if (fp_trace_get(batch, i, &rec) < 0 ||
	    fp_segment_parse(&seg, rec.pkt, rec.len, NULL, 0) < 0) {
		PyErr_SetString(st->parse_error,
				"a packet read could not be parsed again");
		return -1;
	}
	PyObject *v = segment_new_from(st, &seg, ns_to_s(rec.ts_ns), NULL);
	int rc = v ? PyList_Append(segments, v) : -1;
	Py_XDECREF(v);
	if (rc == 0 && packets != Py_None) {
		v = PyBytes_FromStringAndSize((const char *)rec.pkt,
					      (Py_ssize_t)rec.len);
		rc = v ? PyList_Append(packets, v) : -1;
		Py_XDECREF(v);
	}
	if (rc == 0 && stamps != Py_None) {
		v = PyLong_FromUnsignedLongLong(rec.ts_ns);
		rc = v ? PyList_Append(stamps, v) : -1;
		Py_XDECREF(v);
	}
	return rc;
}

static int list_or_none(PyObject *v, const char *name)
{
	if (v == Py_None || PyList_Check(v))
		return 0;
	PyErr_Format(PyExc_TypeError, "%s must be a list or None, not %.100s",
		     name, Py_TYPE(v)->tp_name);
	return -1;
}

/* pcap_read(reader, n, segments, packets, stamps) -> how many: the next
 * TCP packets of the file, up to n, appended as Segments to segments, as
 * bytes to packets and as int ns to stamps (either may be None); 0 at the
 * end of the file. */
static PyObject *pcap_read(PyObject *module, PyObject *args)
{
	PyObject *capsule, *segments, *packets, *stamps;
	Py_ssize_t n;
	if (!PyArg_ParseTuple(args, "OnO!OO:pcap_read", &capsule, &n,
			      &PyList_Type, &segments, &packets, &stamps) ||
	    list_or_none(packets, "packets") < 0 ||
	    list_or_none(stamps, "stamps") < 0)
		return NULL;
	struct reader *rd = PyCapsule_GetPointer(capsule, READER_CAPSULE);
	if (!rd)
		return NULL;
	if (n < 1) {
		PyErr_Format(PyExc_ValueError, "n must be at least 1, got %zd",
			     n);
		return NULL;
	}
	if (rd->busy) {
		PyErr_SetString(
			PyExc_RuntimeError,
			"pcap_read: the reader is in use by another thread");
		return NULL;
	}
	core_state *st = PyModule_GetState(module);
	struct fp_trace *batch = NULL;
	int rc;
	rd->busy = 1;
	Py_BEGIN_ALLOW_THREADS
	rc = read_batch(rd, (size_t)n, &batch);
	Py_END_ALLOW_THREADS
	rd->busy = 0;
	PyObject *result = NULL;
	size_t got = batch ? fp_trace_len(batch) : 0, i = 0;
	if (rc < 0)
		pcap_error(st, -rc, rd->err, Py_None);
	else
		for (; i < got; i++)
			if (append_record(st, batch, i, segments, packets,
					  stamps) < 0)
				break;
	if (rc == 0 && i == got)
		result = PyLong_FromSize_t(got);
	fp_trace_free(batch);
	return result;
}

/* pcap_skipped(reader) -> the packets passed over so far that were not TCP */
static PyObject *pcap_skipped(PyObject *module, PyObject *capsule)
{
	struct reader *rd = PyCapsule_GetPointer(capsule, READER_CAPSULE);
	if (!rd)
		return NULL;
	return PyLong_FromSize_t(fp_trace_reader_skipped(rd->r));
}

PyMethodDef pcap_functions[] = {
	{ "write_pcap", (PyCFunction)(void (*)(void))write_pcap,
	  METH_VARARGS | METH_KEYWORDS,
	  "write_pcap(path, packets, offset_ns=None): [(IP packet, ts: float s or int ns)] to a pcap file "
	  "(LINKTYPE_RAW), stamped ts + offset (default: CLOCK_REALTIME - CLOCK_MONOTONIC)" },
	{ "pcap_open", (PyCFunction)pcap_open, METH_O,
	  "pcap_open(path) -> a reader of the TCP packets of a pcap or pcapng file, for pcap_read" },
	{ "pcap_read", (PyCFunction)pcap_read, METH_VARARGS,
	  "pcap_read(reader, n, segments, packets, stamps) -> count: up to n more, appended as Segments, "
	  "IP packets and ns stamps as in the file (packets, stamps: a list or None); 0 at the end" },
	{ "pcap_skipped", (PyCFunction)pcap_skipped, METH_O,
	  "pcap_skipped(reader) -> packets passed over so far that were not TCP" },
	{ "wall_offset_ns", (PyCFunction)wall_offset_ns, METH_NOARGS,
	  "wall_offset_ns() -> CLOCK_REALTIME - CLOCK_MONOTONIC in ns" },
	{ NULL },
};
