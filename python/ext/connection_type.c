/*
 * connection_type.c: finprobe._core.Connection, our endpoint: its TCB,
 * send, take and trace, over an Engine's fp_conn.
 *
 * Every call holds the Engine's mutex (engine.h).
 */
#include "engine.h"

#include <math.h>
#include <structmember.h>

typedef struct {
	PyObject_HEAD
	EngineObject *engine;
	struct fp_conn *conn; /* NULL once closed */
	PyObject *weakreflist;
	PyObject *dict;
} ConnectionObject;

int connection_class_arg(EngineObject *self, PyObject *cls, PyTypeObject **out)
{
	core_state *st = core_state_of_type(Py_TYPE(self));
	if (!cls || cls == Py_None) {
		*out = st->connection_type;
		return 0;
	}
	if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, st->connection_type)) {
		PyErr_SetString(PyExc_TypeError, "cls must be a subclass of finprobe._core.Connection");
		return -1;
	}
	*out = (PyTypeObject *)cls;
	return 0;
}

PyObject *connection_wrap(EngineObject *engine, PyTypeObject *cls, struct fp_conn *conn)
{
	ConnectionObject *self = (ConnectionObject *)cls->tp_alloc(cls, 0);
	if (!self) {
		pthread_mutex_lock(&engine->lock);
		fp_conn_free(conn);
		pthread_mutex_unlock(&engine->lock);
		return NULL;
	}
	self->engine = (EngineObject *)Py_NewRef(engine);
	self->conn = conn;
	return (PyObject *)self;
}

static void connection_release(ConnectionObject *self)
{
	if (!self->conn)
		return;
	pthread_mutex_lock(&self->engine->lock);
	if (self->engine->engine) /* else freed with its engine already */
		fp_conn_free(self->conn);
	pthread_mutex_unlock(&self->engine->lock);
	self->conn = NULL;
}

static int connection_traverse(ConnectionObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->engine);
	Py_VISIT(self->dict);
	return 0;
}

static int connection_clear(ConnectionObject *self)
{
	connection_release(self);
	Py_CLEAR(self->engine);
	Py_CLEAR(self->dict);
	return 0;
}

static void connection_dealloc(ConnectionObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->weakreflist)
		PyObject_ClearWeakRefs((PyObject *)self);
	connection_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static int connection_open(ConnectionObject *self)
{
	if (self->conn && !self->engine->engine)
		self->conn = NULL; /* freed with its engine */
	if (self->conn)
		return 0;
	core_state *st = core_state_of_type(Py_TYPE(self));
	PyErr_SetString(st ? st->error : PyExc_RuntimeError, "the connection is closed");
	return -1;
}

static PyObject *connection_close(ConnectionObject *self, PyObject *Py_UNUSED(ignored))
{
	connection_release(self);
	Py_RETURN_NONE;
}

/* ---- send ---- */

static int optional_u32(PyObject *value, const char *name, unsigned long long max, uint32_t *out,
			unsigned *forced, unsigned bit)
{
	if (!value || value == Py_None)
		return 0;
	if (!PyLong_Check(value)) {
		PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name, Py_TYPE(value)->tp_name);
		return -1;
	}
	unsigned long long v = PyLong_AsUnsignedLongLong(value);
	if (PyErr_Occurred() || v > max) {
		PyErr_Clear();
		PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu, got %R", name, max, value);
		return -1;
	}
	*out = (uint32_t)v;
	*forced |= bit;
	return 0;
}

/* Build the fields of a Segment from send()'s arguments through the Segment
 * constructor, so validation and messages are the same as Segment(...). */
static SegmentObject *send_template(ConnectionObject *self, PyObject *payload, PyObject *flags,
				    PyObject *options)
{
	core_state *st = core_state_of_type(Py_TYPE(self));
	PyObject *kw = Py_BuildValue("{sOsO}", "payload", payload, "flags", flags);
	if (!kw || (options != Py_None && PyDict_SetItemString(kw, "options", options) < 0)) {
		Py_XDECREF(kw);
		return NULL;
	}
	PyObject *empty = PyTuple_New(0);
	PyObject *seg = empty ? PyObject_Call((PyObject *)st->segment_type, empty, kw) : NULL;
	Py_XDECREF(empty);
	Py_DECREF(kw);
	return (SegmentObject *)seg;
}

/* OSError for a segment the link refused (rc), saying why and how big. */
static void send_error(int rc, size_t payload_len)
{
	PyObject *err = PyObject_CallFunction(PyExc_OSError, "is", -rc, "");
	if (!err)
		return;
	PyObject *msg = PyUnicode_FromFormat("send: the link refused the segment (%s, %zu bytes of payload)",
					     strerror(-rc), payload_len);
	if (msg)
		PyObject_SetAttrString(err, "strerror", msg);
	Py_XDECREF(msg);
	PyErr_SetObject(PyExc_OSError, err);
	Py_DECREF(err);
}

static PyObject *connection_send(ConnectionObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = {"payload", "flags", "seq", "ack", "window", "options", "checksum", NULL};
	PyObject *payload = NULL, *flags = NULL, *seq = NULL, *ack = NULL, *window = NULL,
		 *options = Py_None, *checksum = Py_None;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$OOOOOO:send", kw, &payload, &flags, &seq,
					 &ack, &window, &options, &checksum) ||
	    connection_open(self) < 0)
		return NULL;
	PyObject *empty = PyBytes_FromStringAndSize(NULL, 0), *a = PyUnicode_FromString("A");
	SegmentObject *tmpl = send_template(self, payload ? payload : empty, flags ? flags : a, options);
	Py_DECREF(empty);
	Py_DECREF(a);
	if (!tmpl)
		return NULL;
	struct fp_segment seg = tmpl->seg;
	unsigned forced = 0, checksum_given = 0;
	uint32_t window32 = 0, checksum32 = 0;
	if (optional_u32(seq, "seq", 0xffffffffu, &seg.seq, &forced, FP_FORCE_SEQ) < 0 ||
	    optional_u32(ack, "ack", 0xffffffffu, &seg.ack, &forced, FP_FORCE_ACK) < 0 ||
	    optional_u32(window, "window", 0xffff, &window32, &forced, FP_FORCE_WINDOW) < 0 ||
	    optional_u32(checksum, "checksum", 0xffff, &checksum32, &checksum_given, 1) < 0) {
		Py_DECREF(tmpl);
		return NULL;
	}
	seg.window = (uint16_t)window32;
	seg.force_checksum = (uint8_t)checksum_given;
	seg.checksum = (uint16_t)checksum32;
	pthread_mutex_lock(&self->engine->lock);
	int rc = fp_conn_send(self->conn, &seg, forced);
	size_t n = fp_conn_trace_len(self->conn);
	struct fp_record rec = {0};
	if (rc == 0)
		fp_conn_trace_get(self->conn, n - 1, &rec);
	pthread_mutex_unlock(&self->engine->lock);
	/* seg.payload points into tmpl's payload, which may be the only copy
	 * (of a bytearray, a memoryview ...): tmpl lives until seg is read. */
	PyObject *result = NULL;
	if (rc == -EINVAL)
		PyErr_Format(PyExc_ValueError, "send: the segment cannot be built (options over 40 bytes?)");
	else if (rc < 0)
		send_error(rc, seg.payload_len);
	else
		result = segment_new_from(core_state_of_type(Py_TYPE(self)), &seg, ns_to_s(rec.ts_ns), "out");
	Py_DECREF(tmpl);
	return result;
}

/* ---- take ---- */

/* The next received segment, taken (the TCB moves), or None after timeout. */
static PyObject *connection_take(ConnectionObject *self, PyObject *args)
{
	double timeout = 0;
	if (!PyArg_ParseTuple(args, "|d:take", &timeout) || connection_open(self) < 0)
		return NULL;
	if (!(timeout >= 0) || isinf(timeout))
		return PyErr_Format(PyExc_ValueError, "timeout must be a finite number >= 0, got %R",
				    PyTuple_GET_ITEM(args, 0));
	uint64_t deadline = fp_now_ns() + (uint64_t)(timeout * 1e9);
	core_state *st = core_state_of_type(Py_TYPE(self));
	for (int more = 1;;) {
		struct fp_record rec;
		struct fp_segment seg;
		enum fp_reply reply;
		pthread_mutex_lock(&self->engine->lock);
		int rc = fp_conn_take(self->conn, &rec, &seg, &reply);
		PyObject *result = rc == 0 ? segment_new_from(st, &seg, ns_to_s(rec.ts_ns), "in") : NULL;
		pthread_mutex_unlock(&self->engine->lock);
		if (rc == 0)
			return result;
		if (!more)
			Py_RETURN_NONE;
		more = engine_wait_slice(self->engine, deadline);
		if (more < 0)
			return NULL;
		if (connection_open(self) < 0)
			return NULL; /* closed by another thread meanwhile */
	}
}

/* ---- trace ---- */

static PyObject *connection_trace(ConnectionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (connection_open(self) < 0)
		return NULL;
	core_state *st = core_state_of_type(Py_TYPE(self));
	pthread_mutex_lock(&self->engine->lock);
	size_t n = fp_conn_trace_len(self->conn);
	PyObject *list = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; list && i < n; i++) {
		struct fp_record rec;
		struct fp_segment seg;
		fp_conn_trace_get(self->conn, i, &rec);
		PyObject *item = NULL;
		if (fp_segment_parse(&seg, rec.pkt, rec.len, NULL, 0) == 0)
			item = Py_BuildValue("(Nsiy#)",
					     segment_new_from(st, &seg, ns_to_s(rec.ts_ns),
							      rec.direction == FP_DIR_IN ? "in" : "out"),
					     rec.direction == FP_DIR_IN && !rec.taken
						     ? "" : fp_state_name(rec.state_after),
					     rec.taken || rec.direction == FP_DIR_OUT,
					     rec.pkt, (Py_ssize_t)rec.len);
		if (!item) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, item);
	}
	pthread_mutex_unlock(&self->engine->lock);
	return list;
}

static PyObject *connection_transitions(ConnectionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (connection_open(self) < 0)
		return NULL;
	const struct fp_transition *t;
	pthread_mutex_lock(&self->engine->lock);
	size_t n = fp_conn_transitions(self->conn, &t);
	PyObject *list = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; list && i < n; i++) {
		PyObject *item = Py_BuildValue("(dsss)", ns_to_s(t[i].when_ns), fp_state_name(t[i].from),
					       fp_state_name(t[i].to), t[i].why ? t[i].why : "");
		if (!item) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, item);
	}
	pthread_mutex_unlock(&self->engine->lock);
	return list;
}

/* ---- attributes ---- */

static struct fp_tcb *tcb_now(ConnectionObject *self)
{
	if (connection_open(self) < 0)
		return NULL;
	struct fp_tcb *tcb = fp_conn_tcb(self->conn);
	pthread_mutex_lock(&self->engine->lock);
	fp_tcb_tick(tcb, fp_now_ns()); /* let TIME_WAIT run out */
	pthread_mutex_unlock(&self->engine->lock);
	return tcb;
}

#define TCB_FIELD(name)                                                          \
	static PyObject *get_##name(ConnectionObject *self, void *c)            \
	{                                                                        \
		struct fp_tcb *tcb = tcb_now(self);                              \
		return tcb ? PyLong_FromUnsignedLong(tcb->name) : NULL;          \
	}
TCB_FIELD(iss)
TCB_FIELD(irs)
TCB_FIELD(snd_una)
TCB_FIELD(snd_nxt)
TCB_FIELD(snd_wnd)
TCB_FIELD(rcv_nxt)
TCB_FIELD(rcv_wnd)

static PyObject *get_state_name(ConnectionObject *self, void *c)
{
	struct fp_tcb *tcb = tcb_now(self);
	return tcb ? PyUnicode_FromString(fp_state_name(tcb->state)) : NULL;
}

static PyObject *endpoint(int family, const uint8_t *addr, uint16_t port)
{
	return Py_BuildValue("(Ni)", core_format_address(family, addr), port);
}

static PyObject *get_local(ConnectionObject *self, void *c)
{
	if (connection_open(self) < 0)
		return NULL;
	const struct fp_tuple *t = fp_conn_tuple(self->conn);
	return endpoint(t->family, t->local, t->local_port);
}

static PyObject *get_remote(ConnectionObject *self, void *c)
{
	if (connection_open(self) < 0)
		return NULL;
	const struct fp_tuple *t = fp_conn_tuple(self->conn);
	return endpoint(t->family, t->remote, t->remote_port);
}

static PyObject *get_closed(ConnectionObject *self, void *c) { return PyBool_FromLong(!self->conn); }

static PyObject *get_pending(ConnectionObject *self, void *c)
{
	if (connection_open(self) < 0)
		return NULL;
	pthread_mutex_lock(&self->engine->lock);
	size_t n = fp_conn_pending(self->conn);
	pthread_mutex_unlock(&self->engine->lock);
	return PyLong_FromSize_t(n);
}

static PyObject *get_time_wait_left(ConnectionObject *self, void *c)
{
	struct fp_tcb *tcb = tcb_now(self);
	if (!tcb)
		return NULL;
	if (tcb->state != FP_STATE_TIME_WAIT)
		Py_RETURN_NONE;
	uint64_t now = fp_now_ns();
	return PyFloat_FromDouble(tcb->time_wait_until > now ? ns_to_s(tcb->time_wait_until - now) : 0);
}

static PyGetSetDef connection_getset[] = {
	{"_state_name", (getter)get_state_name, NULL, "our state's RFC 9293 name", NULL},
	{"iss", (getter)get_iss, NULL, "our initial sequence number", NULL},
	{"irs", (getter)get_irs, NULL, "the peer's initial sequence number", NULL},
	{"snd_una", (getter)get_snd_una, NULL, "oldest unacknowledged sequence number", NULL},
	{"snd_nxt", (getter)get_snd_nxt, NULL, "next sequence number to send", NULL},
	{"snd_wnd", (getter)get_snd_wnd, NULL, "the peer's advertised window", NULL},
	{"rcv_nxt", (getter)get_rcv_nxt, NULL, "next sequence number expected", NULL},
	{"rcv_wnd", (getter)get_rcv_wnd, NULL, "our receive window", NULL},
	{"local", (getter)get_local, NULL, "(address, port) of our end", NULL},
	{"remote", (getter)get_remote, NULL, "(address, port) of the peer", NULL},
	{"closed", (getter)get_closed, NULL, "whether close() released the connection", NULL},
	{"pending", (getter)get_pending, NULL, "received segments not taken yet", NULL},
	{"time_wait_left", (getter)get_time_wait_left, NULL, "seconds left in TIME_WAIT, or None", NULL},
	{"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
	{NULL},
};

static PyMemberDef connection_members[] = {
	{"__weaklistoffset__", T_PYSSIZET, offsetof(ConnectionObject, weakreflist), READONLY},
	{"__dictoffset__", T_PYSSIZET, offsetof(ConnectionObject, dict), READONLY},
	{NULL},
};

static PyMethodDef connection_methods[] = {
	{"send", (PyCFunction)(void (*)(void))connection_send, METH_VARARGS | METH_KEYWORDS,
	 "send(payload=b\"\", *, flags=\"A\", seq=None, ack=None, window=None, options=None, "
	 "checksum=None) -> Segment\n\nUnset fields come from our state (seq = SND.NXT, ack = RCV.NXT)."},
	{"_take", (PyCFunction)connection_take, METH_VARARGS,
	 "_take(timeout=0) -> Segment or None: the next received segment; our state moves"},
	{"_trace", (PyCFunction)connection_trace, METH_NOARGS,
	 "_trace() -> [(Segment, state after, taken, IP packet)] both ways, in order"},
	{"transitions", (PyCFunction)connection_transitions, METH_NOARGS,
	 "transitions() -> [(ts, from, to, why)] of our state machine"},
	{"close", (PyCFunction)connection_close, METH_NOARGS,
	 "close(): release the connection; sends nothing"},
	{NULL},
};

static PyType_Slot connection_slots[] = {
	{Py_tp_doc, "The C side of a connection: our endpoint's TCB, its sends, receives and trace."},
	{Py_tp_dealloc, connection_dealloc},
	{Py_tp_traverse, connection_traverse},
	{Py_tp_clear, connection_clear},
	{Py_tp_getset, connection_getset},
	{Py_tp_members, connection_members},
	{Py_tp_methods, connection_methods},
	{0, NULL},
};

PyType_Spec connection_spec = {
	.name = "finprobe._core.Connection",
	.basicsize = sizeof(ConnectionObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
	.slots = connection_slots,
};
