/*
 * engine_type.c: finprobe._core.Engine (one link and its connections),
 * Connection (our endpoint: TCB, send, take, trace) and Listener.
 *
 * Every call into the engine holds the Engine's mutex; waits release the
 * GIL and poll in slices, checking for signals between them, so Ctrl-C
 * interrupts a wait in a terminal and in Jupyter. The mutex is never held
 * while taking the GIL, so the two cannot deadlock.
 */
#include "core.h"

#include <math.h>
#include <pthread.h>
#include <structmember.h>

#define WAIT_SLICE_MS 50

typedef struct {
	PyObject_HEAD
	struct fp_engine *engine;
	pthread_mutex_t lock;
	PyObject *owner; /* what keeps the link's descriptor alive (a Lab) */
} EngineObject;

typedef struct {
	PyObject_HEAD
	EngineObject *engine;
	struct fp_conn *conn; /* NULL once closed */
	PyObject *weakreflist;
	PyObject *dict;
} ConnectionObject;

typedef struct {
	PyObject_HEAD
	EngineObject *engine;
	struct fp_listener *listener;
} ListenerObject;

static double ns_to_s(uint64_t ns) { return (double)ns / 1e9; }

/* ---- Engine -------------------------------------------------------------------- */

static EngineObject *engine_wrap(PyTypeObject *type, struct fp_link *link, PyObject *owner)
{
	EngineObject *self = (EngineObject *)type->tp_alloc(type, 0);
	if (!self) {
		fp_link_close(link);
		return NULL;
	}
	pthread_mutex_init(&self->lock, NULL);
	int err = fp_engine_new(&self->engine, link);
	if (err) {
		fp_link_close(link);
		Py_DECREF(self);
		errno = -err;
		return (EngineObject *)PyErr_SetFromErrno(PyExc_OSError);
	}
	self->owner = Py_XNewRef(owner);
	return self;
}

static int mac_arg(PyObject *value, const char *name, uint8_t mac[6])
{
	if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) != 6) {
		PyErr_Format(PyExc_ValueError, "%s must be 6 bytes, got %R", name, value);
		return -1;
	}
	memcpy(mac, PyBytes_AS_STRING(value), 6);
	return 0;
}

static PyObject *engine_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = {"fd", "src_mac", "dst_mac", "owner", NULL};
	int fd;
	PyObject *src, *dst, *owner = Py_None;
	uint8_t smac[6], dmac[6];
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iOO|O:Engine", kw, &fd, &src, &dst, &owner) ||
	    mac_arg(src, "src_mac", smac) < 0 || mac_arg(dst, "dst_mac", dmac) < 0)
		return NULL;
	struct fp_link *link;
	int err = fp_link_packet_open(&link, fd, smac, dmac);
	if (err) {
		errno = -err;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	return (PyObject *)engine_wrap(type, link, owner);
}

static PyObject *engine_pair(PyObject *cls, PyObject *Py_UNUSED(ignored))
{
	struct fp_link *a, *b;
	if (fp_link_pair_open(&a, &b) < 0)
		return PyErr_NoMemory();
	EngineObject *ea = engine_wrap((PyTypeObject *)cls, a, NULL);
	if (!ea) {
		fp_link_close(b);
		return NULL;
	}
	EngineObject *eb = engine_wrap((PyTypeObject *)cls, b, NULL);
	if (!eb) {
		Py_DECREF(ea);
		return NULL;
	}
	return Py_BuildValue("(NN)", ea, eb);
}

/* The message of a failed fp_link_raw_open, raised as the fp error it is. */
static PyObject *raw_open_error(PyTypeObject *type, int rc, PyObject *remote, PyObject *src,
				int ifindex)
{
	core_state *st = core_state_of_type(type);
	switch (rc) {
	case -EPERM:
	case -EACCES:
		return PyErr_Format(st->permission_error,
				    "raw sockets towards %S need CAP_NET_RAW: run as root, or grant it "
				    "(sudo setcap cap_net_raw,cap_net_admin+ep <python binary>)", remote);
	case -ENETUNREACH:
	case -EHOSTUNREACH:
		return PyErr_Format(st->error, "no route to %S%s", remote,
				    ifindex ? " through the interface given" : "");
	case -EADDRNOTAVAIL:
		if (src != Py_None)
			return PyErr_Format(st->error, "src %R is not an address of this host", src);
		return PyErr_Format(st->error, "no source address for the route to %S", remote);
	case -ENODEV:
		return PyErr_Format(PyExc_ValueError, "no interface with index %d", ifindex);
	default:
		errno = -rc;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
}

/* raw(remote_addr, remote_port, src=None, ifindex=0) -> (Engine, src, ifindex) */
static PyObject *engine_raw(PyObject *cls, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = {"remote_addr", "remote_port", "src", "ifindex", NULL};
	PyObject *remote, *src = Py_None;
	int port, ifindex = 0, rc;
	uint8_t raddr[16], local[16] = {0}, family, src_family;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Oi|Oi:raw", kw, &remote, &port, &src, &ifindex) ||
	    core_parse_address("remote_addr", remote, raddr, &family) < 0 ||
	    (src != Py_None && core_parse_address("src", src, local, &src_family) < 0))
		return NULL;
	if (port < 1 || port > 65535)
		return PyErr_Format(PyExc_ValueError, "remote_port must be in 1..65535, got %d", port);
	if (src != Py_None && src_family != family)
		return PyErr_Format(PyExc_ValueError, "src %R and remote_addr %R are not of one IP version",
				    src, remote);
	if (ifindex < 0)
		return PyErr_Format(PyExc_ValueError, "ifindex must be >= 0, got %d", ifindex);
	struct fp_link *link;
	Py_BEGIN_ALLOW_THREADS
	rc = fp_link_raw_open(&link, family, raddr, (uint16_t)port, local, &ifindex);
	Py_END_ALLOW_THREADS
	if (rc)
		return raw_open_error((PyTypeObject *)cls, rc, remote, src, ifindex);
	EngineObject *engine = engine_wrap((PyTypeObject *)cls, link, NULL);
	if (!engine)
		return NULL;
	return Py_BuildValue("(NNi)", engine, core_format_address(family, local), ifindex);
}

static int engine_traverse(EngineObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->owner);
	return 0;
}

static int engine_clear(EngineObject *self)
{
	Py_CLEAR(self->owner);
	return 0;
}

static void engine_dealloc(EngineObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	fp_engine_free(self->engine); /* connections hold a reference: none is left */
	pthread_mutex_destroy(&self->lock);
	engine_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static int engine_open_check(EngineObject *self)
{
	if (self->engine)
		return 0;
	PyErr_SetString(core_state_of_type(Py_TYPE(self))->error, "the lab or link is closed");
	return -1;
}

/* Receive for up to timeout_ms without the GIL. Returns -1 on error. */
static int engine_poll_nogil(EngineObject *self, int timeout_ms)
{
	int rc;
	Py_BEGIN_ALLOW_THREADS
	pthread_mutex_lock(&self->lock);
	rc = self->engine ? fp_engine_poll(self->engine, timeout_ms) : -EBADF;
	pthread_mutex_unlock(&self->lock);
	Py_END_ALLOW_THREADS
	if (rc < 0 && rc != -EINTR) {
		errno = -rc;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	return PyErr_CheckSignals();
}

/* One slice of a wait for something to arrive before deadline: poll the
 * link for at most WAIT_SLICE_MS, so that signals are seen in between.
 * Returns 1 to look again, 0 once the deadline has passed (after a last
 * poll that does not wait: what is already there still counts), -1 with an
 * exception (a signal's, such as KeyboardInterrupt). */
static int engine_wait_slice(EngineObject *self, uint64_t deadline)
{
	uint64_t now = fp_now_ns();
	if (now >= deadline)
		return engine_poll_nogil(self, 0) < 0 ? -1 : 0;
	uint64_t left_ms = (deadline - now + 999999) / 1000000;
	int slice = left_ms > WAIT_SLICE_MS ? WAIT_SLICE_MS : (int)left_ms;
	return engine_poll_nogil(self, slice) < 0 ? -1 : 1;
}

static PyObject *engine_poll(EngineObject *self, PyObject *args)
{
	double timeout = 0;
	if (!PyArg_ParseTuple(args, "|d:poll", &timeout) || engine_open_check(self) < 0)
		return NULL;
	if (engine_poll_nogil(self, (int)(timeout * 1000)) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *engine_stats(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	struct fp_engine_stats s;
	if (engine_open_check(self) < 0)
		return NULL;
	pthread_mutex_lock(&self->lock);
	fp_engine_stats(self->engine, &s);
	pthread_mutex_unlock(&self->lock);
	return Py_BuildValue("{sKsKsKsK}", "received", s.received, "unclaimed", s.unclaimed,
			     "malformed", s.malformed, "truncated", s.truncated);
}

static int tuple_arg(PyObject *args, struct fp_tuple *t, PyObject **rest_kw)
{
	PyObject *laddr, *raddr;
	int lport, rport;
	uint8_t lf, rf;
	(void)rest_kw;
	if (!PyArg_ParseTuple(args, "OiOi", &laddr, &lport, &raddr, &rport))
		return -1;
	memset(t, 0, sizeof(*t));
	if (core_parse_address("local address", laddr, t->local, &lf) < 0 ||
	    core_parse_address("remote address", raddr, t->remote, &rf) < 0)
		return -1;
	if (lf != rf || lport < 0 || lport > 65535 || rport < 0 || rport > 65535) {
		PyErr_SetString(PyExc_ValueError, "ports must be in 0..65535 and both addresses of one IP version");
		return -1;
	}
	t->family = lf;
	t->local_port = (uint16_t)lport;
	t->remote_port = (uint16_t)rport;
	return 0;
}

static PyObject *engine_has_tuple(EngineObject *self, PyObject *args)
{
	struct fp_tuple t;
	if (tuple_arg(args, &t, NULL) < 0 || engine_open_check(self) < 0)
		return NULL;
	pthread_mutex_lock(&self->lock);
	int has = fp_engine_has_tuple(self->engine, &t);
	pthread_mutex_unlock(&self->lock);
	return PyBool_FromLong(has);
}

static PyObject *connection_wrap(EngineObject *engine, PyTypeObject *cls, struct fp_conn *conn);

static int connection_class_arg(EngineObject *self, PyObject *cls, PyTypeObject **out)
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

/* open(local_addr, local_port, remote_addr, remote_port, iss, time_wait, cls=None) */
static PyObject *engine_open(EngineObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = {"local_addr", "local_port", "remote_addr", "remote_port", "iss", "time_wait",
			     "cls", NULL};
	PyObject *la, *ra, *cls = NULL;
	int lp, rp;
	unsigned long iss;
	double time_wait;
	PyTypeObject *type;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OiOikd|O:open", kw, &la, &lp, &ra, &rp, &iss,
					 &time_wait, &cls) ||
	    connection_class_arg(self, cls, &type) < 0 || engine_open_check(self) < 0)
		return NULL;
	struct fp_tuple t;
	PyObject *tuple_args = Py_BuildValue("(OiOi)", la, lp, ra, rp);
	int bad = !tuple_args || tuple_arg(tuple_args, &t, NULL) < 0;
	Py_XDECREF(tuple_args);
	if (bad)
		return NULL;
	struct fp_conn *conn;
	pthread_mutex_lock(&self->lock);
	int rc = fp_conn_new(&conn, self->engine, &t, (uint32_t)iss, (uint64_t)(time_wait * 1e9));
	pthread_mutex_unlock(&self->lock);
	if (rc < 0) {
		if (rc == -EADDRINUSE)
			return PyErr_Format(PyExc_ValueError,
					    "a connection %U:%d -> %U:%d is already open", la, lp, ra, rp);
		return PyErr_NoMemory();
	}
	return connection_wrap(self, type, conn);
}

static PyObject *engine_listen(EngineObject *self, PyObject *args)
{
	PyObject *addr;
	int port;
	uint8_t a[16], family;
	if (!PyArg_ParseTuple(args, "Oi:listen", &addr, &port) ||
	    core_parse_address("address", addr, a, &family) < 0 || engine_open_check(self) < 0)
		return NULL;
	if (port < 1 || port > 65535)
		return PyErr_Format(PyExc_ValueError, "port must be in 1..65535, got %d", port);
	PyTypeObject *type = core_state_of_type(Py_TYPE(self))->listener_type;
	ListenerObject *l = (ListenerObject *)type->tp_alloc(type, 0);
	if (!l)
		return NULL;
	pthread_mutex_lock(&self->lock);
	int rc = fp_listener_new(&l->listener, self->engine, family, a, (uint16_t)port);
	pthread_mutex_unlock(&self->lock);
	l->engine = (EngineObject *)Py_NewRef(self);
	if (rc < 0) {
		Py_DECREF(l);
		return PyErr_NoMemory();
	}
	return (PyObject *)l;
}

/* capture_start(): the engine's capture keeps every segment from now on. */
static PyObject *engine_capture_start(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	pthread_mutex_lock(&self->lock);
	int rc = self->engine ? fp_engine_capture_start(self->engine) : -EBADF;
	pthread_mutex_unlock(&self->lock);
	if (rc == -EBADF) {
		engine_open_check(self); /* closed: raises */
		return NULL;
	}
	if (rc < 0)
		return PyErr_NoMemory();
	Py_RETURN_NONE;
}

/* capture() -> [(Segment, IP packet)]: every segment sent or received since
 * capture_start(), in order, claimed by a connection or not (the engine's
 * capture); [] while it is off. Copied under the lock, built after. */
static PyObject *engine_capture(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	if (engine_open_check(self) < 0)
		return NULL;
	core_state *st = core_state_of_type(Py_TYPE(self));
	struct fp_trace *copy = NULL, *cap;
	int rc = 0;
	pthread_mutex_lock(&self->lock);
	cap = self->engine ? fp_engine_capture(self->engine) : NULL;
	if (cap)
		rc = fp_trace_copy(cap, 0, fp_trace_len(cap), &copy);
	pthread_mutex_unlock(&self->lock);
	if (rc < 0)
		return PyErr_NoMemory();
	size_t n = copy ? fp_trace_len(copy) : 0;
	PyObject *list = PyList_New(0);
	for (size_t i = 0; list && i < n; i++) {
		struct fp_record rec;
		struct fp_segment seg;
		if (fp_trace_get(copy, i, &rec) < 0 ||
		    fp_segment_parse(&seg, rec.pkt, rec.len, NULL, 0) < 0)
			continue;
		PyObject *item = Py_BuildValue("(Ny#)",
					       segment_new_from(st, &seg, ns_to_s(rec.ts_ns),
								rec.direction == FP_DIR_IN ? "in" : "out"),
					       rec.pkt, (Py_ssize_t)rec.len);
		if (!item || PyList_Append(list, item) < 0)
			Py_CLEAR(list);
		Py_XDECREF(item);
	}
	fp_trace_free(copy);
	return list;
}

/* close(): free the engine, its link and any connection left; every later
 * call on it or on its connections raises. Its owner (the Lab) calls this
 * before closing the descriptor the link reads. */
static PyObject *engine_close(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	pthread_mutex_lock(&self->lock);
	fp_engine_free(self->engine);
	self->engine = NULL;
	pthread_mutex_unlock(&self->lock);
	Py_RETURN_NONE;
}

static PyMethodDef engine_methods[] = {
	{"close", (PyCFunction)engine_close, METH_NOARGS,
	 "close(): free the engine and its link; connections left become closed"},
	{"pair", (PyCFunction)engine_pair, METH_NOARGS | METH_CLASS,
	 "pair() -> (Engine, Engine) joined by an in-memory link"},
	{"raw", (PyCFunction)(void (*)(void))engine_raw, METH_VARARGS | METH_KEYWORDS | METH_CLASS,
	 "raw(remote_addr, remote_port, src=None, ifindex=0) -> (Engine, src, ifindex): over raw IP "
	 "sockets towards a remote target; src and interface from the routing table unless given"},
	{"poll", (PyCFunction)engine_poll, METH_VARARGS, "poll(timeout=0): receive what the link has"},
	{"stats", (PyCFunction)engine_stats, METH_NOARGS, "counters of what no connection took"},
	{"capture_start", (PyCFunction)engine_capture_start, METH_NOARGS,
	 "capture_start(): keep every segment sent or received from now on (off by default)"},
	{"capture", (PyCFunction)engine_capture, METH_NOARGS,
	 "capture() -> [(Segment, IP packet)]: every segment sent or received since capture_start(), "
	 "claimed or not; [] while off"},
	{"has_tuple", (PyCFunction)engine_has_tuple, METH_VARARGS,
	 "has_tuple(local_addr, local_port, remote_addr, remote_port) -> bool"},
	{"open", (PyCFunction)(void (*)(void))engine_open, METH_VARARGS | METH_KEYWORDS,
	 "open(local_addr, local_port, remote_addr, remote_port, iss, time_wait, cls=None) -> Connection"},
	{"listen", (PyCFunction)engine_listen, METH_VARARGS,
	 "listen(address, port) -> Listener catching SYNs no connection claims"},
	{NULL},
};

static PyType_Slot engine_slots[] = {
	{Py_tp_doc, "Engine(fd, src_mac, dst_mac, owner=None): connections over an AF_PACKET link"},
	{Py_tp_new, engine_new},
	{Py_tp_dealloc, engine_dealloc},
	{Py_tp_traverse, engine_traverse},
	{Py_tp_clear, engine_clear},
	{Py_tp_methods, engine_methods},
	{0, NULL},
};

PyType_Spec engine_spec = {
	.name = "finprobe._core.Engine",
	.basicsize = sizeof(EngineObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = engine_slots,
};

/* ---- Connection ---------------------------------------------------------------- */

static PyObject *connection_wrap(EngineObject *engine, PyTypeObject *cls, struct fp_conn *conn)
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
	struct fp_trace *trace = fp_conn_trace(self->conn);
	struct fp_record rec = {0};
	if (rc == 0)
		fp_trace_get(trace, fp_trace_len(trace) - 1, &rec);
	pthread_mutex_unlock(&self->engine->lock);
	Py_DECREF(tmpl);
	if (rc == -EINVAL)
		return PyErr_Format(PyExc_ValueError, "send: the segment cannot be built (options over 40 bytes?)");
	if (rc < 0) {
		PyObject *err = PyObject_CallFunction(PyExc_OSError, "is", -rc, "");
		if (err) {
			PyObject *msg = PyUnicode_FromFormat("send: the link refused the segment (%s, %zu bytes of payload)",
							     strerror(-rc), seg.payload_len);
			if (msg)
				PyObject_SetAttrString(err, "strerror", msg);
			Py_XDECREF(msg);
			PyErr_SetObject(PyExc_OSError, err);
			Py_DECREF(err);
		}
		return NULL;
	}
	core_state *st = core_state_of_type(Py_TYPE(self));
	return segment_new_from(st, &seg, ns_to_s(rec.ts_ns), "out");
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
	struct fp_trace *copy = NULL, *trace;
	pthread_mutex_lock(&self->engine->lock);
	trace = fp_conn_trace(self->conn);
	int rc = fp_trace_copy(trace, 0, fp_trace_len(trace), &copy);
	pthread_mutex_unlock(&self->engine->lock);
	if (rc < 0)
		return PyErr_NoMemory();
	size_t n = fp_trace_len(copy);
	PyObject *list = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; list && i < n; i++) {
		struct fp_record rec;
		struct fp_segment seg;
		fp_trace_get(copy, i, &rec);
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
	fp_trace_free(copy);
	return list;
}

static PyObject *connection_transitions(ConnectionObject *self, PyObject *Py_UNUSED(ignored))
{
	if (connection_open(self) < 0)
		return NULL;
	const struct fp_transition *t;
	struct fp_trace *copy = NULL;
	pthread_mutex_lock(&self->engine->lock);
	int rc = fp_trace_copy(fp_conn_trace(self->conn), 0, 0, &copy); /* transitions only */
	pthread_mutex_unlock(&self->engine->lock);
	if (rc < 0)
		return PyErr_NoMemory();
	size_t n = fp_trace_transitions(copy, &t);
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
	fp_trace_free(copy);
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

/* ---- Listener ------------------------------------------------------------------ */

static void listener_dealloc(ListenerObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->listener) {
		pthread_mutex_lock(&self->engine->lock);
		if (self->engine->engine)
			fp_listener_free(self->listener);
		pthread_mutex_unlock(&self->engine->lock);
	}
	Py_CLEAR(self->engine);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static int listener_traverse(ListenerObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->engine);
	return 0;
}

/* accept(timeout, iss, time_wait, cls=None) -> Connection (TCB LISTEN) or None */
static PyObject *listener_accept(ListenerObject *self, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = {"timeout", "iss", "time_wait", "cls", NULL};
	double timeout, time_wait;
	unsigned long iss;
	PyObject *cls = NULL;
	PyTypeObject *type;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "dkd|O:accept", kw, &timeout, &iss, &time_wait, &cls) ||
	    connection_class_arg(self->engine, cls, &type) < 0 || engine_open_check(self->engine) < 0)
		return NULL;
	uint64_t deadline = fp_now_ns() + (uint64_t)(timeout * 1e9);
	for (int more = 1;;) {
		if (engine_open_check(self->engine) < 0)
			return NULL;
		struct fp_conn *conn;
		pthread_mutex_lock(&self->engine->lock);
		int err = -fp_listener_accept(&conn, self->listener, (uint32_t)iss,
					      (uint64_t)(time_wait * 1e9));
		pthread_mutex_unlock(&self->engine->lock);
		if (!err)
			return connection_wrap(self->engine, type, conn);
		if (err == EADDRINUSE)
			return PyErr_Format(PyExc_ValueError, "a connection for the waiting SYN's 4-tuple is already open");
		if (err != EAGAIN)
			return PyErr_NoMemory();
		if (!more)
			Py_RETURN_NONE;
		more = engine_wait_slice(self->engine, deadline);
		if (more < 0)
			return NULL;
	}
}

static PyMethodDef listener_methods[] = {
	{"accept", (PyCFunction)(void (*)(void))listener_accept, METH_VARARGS | METH_KEYWORDS,
	 "accept(timeout, iss, time_wait, cls=None) -> Connection in LISTEN with the SYN waiting, or None"},
	{NULL},
};

static PyType_Slot listener_slots[] = {
	{Py_tp_doc, "SYNs to one address and port that no connection claims."},
	{Py_tp_dealloc, listener_dealloc},
	{Py_tp_traverse, listener_traverse},
	{Py_tp_methods, listener_methods},
	{0, NULL},
};

PyType_Spec listener_spec = {
	.name = "finprobe._core.Listener",
	.basicsize = sizeof(ListenerObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = listener_slots,
};
