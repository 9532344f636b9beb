/*
 * engine_type.c: finprobe._core.Engine, one link and its connections.
 *
 * Every call into the engine holds the Engine's mutex, taken and held as
 * core.h says: never blocking on it with the GIL, never making or freeing a
 * Python object under it. Waits release the GIL and poll in slices,
 * checking for signals between them, so Ctrl-C interrupts a wait in a
 * terminal and in Jupyter.
 */
#include "engine.h"

#include <math.h>

/* ---- Engine -------------------------------------------------------------------- */

static EngineObject *engine_wrap(PyTypeObject *type, struct fp_link *link,
				 PyObject *owner)
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
		PyErr_Format(PyExc_ValueError, "%s must be 6 bytes, got %R",
			     name, value);
		return -1;
	}
	memcpy(mac, PyBytes_AS_STRING(value), 6);
	return 0;
}

/* A packet link on fd; with answer (our address, not None) one that
 * answers ARP / neighbour solicitation for it (a stack lab's TAP). Returns
 * 0, or -1 with an exception. */
static int packet_link(int fd, const uint8_t smac[6], const uint8_t dmac[6],
		       PyObject *answer, struct fp_link **link)
{
	uint8_t local[16], family = 0;
	if (answer != Py_None &&
	    core_parse_address("answer", answer, local, &family) < 0)
		return -1;
	int err = fp_link_packet_open(link, fd, smac, dmac);
	if (!err && family) {
		err = fp_link_packet_answer(*link, family, local);
		if (err)
			fp_link_close(*link);
	}
	if (err) {
		errno = -err;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	return 0;
}

static PyObject *engine_new(PyTypeObject *type, PyObject *args,
			    PyObject *kwargs)
{
	static char *kw[] = { "fd",    "src_mac", "dst_mac",
			      "owner", "answer",  NULL };
	int fd;
	PyObject *src, *dst, *owner = Py_None, *answer = Py_None;
	uint8_t smac[6], dmac[6];
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iOO|O$O:Engine", kw,
					 &fd, &src, &dst, &owner, &answer) ||
	    mac_arg(src, "src_mac", smac) < 0 ||
	    mac_arg(dst, "dst_mac", dmac) < 0)
		return NULL;
	struct fp_link *link;
	if (packet_link(fd, smac, dmac, answer, &link) < 0)
		return NULL;
	return (PyObject *)engine_wrap(type, link, owner);
}

#define RESOLVE_SLICE_MS 100 /* then look for signals again */

/* Ask on the TAP in slices with the GIL released, signals run between. */
static PyObject *resolve_wait(struct fp_link *link, const uint8_t *peer,
			      uint64_t timeout_ns)
{
	uint64_t end = fp_now_ns() + timeout_ns;
	uint8_t mac[6];
	int rc;
	for (;;) {
		int ms = core_slice_ms(end, RESOLVE_SLICE_MS);
		Py_BEGIN_ALLOW_THREADS
		rc = fp_link_packet_resolve(link, peer, ms, mac);
		Py_END_ALLOW_THREADS
		if (rc == 0)
			return PyBytes_FromStringAndSize((const char *)mac, 6);
		if (rc != -ETIMEDOUT) {
			errno = -rc;
			return PyErr_SetFromErrno(PyExc_OSError);
		}
		if (PyErr_CheckSignals() < 0)
			return NULL;
		if (fp_now_ns() >= end)
			Py_RETURN_NONE;
	}
}

/* Engine.resolve: the stack's MAC, before any Engine is made on fd. */
static PyObject *engine_resolve(PyObject *cls, PyObject *args)
{
	int fd;
	PyObject *src, *local_text, *peer_text, *timeout;
	uint8_t smac[6], local[16], peer[16], lfam, pfam;
	uint64_t timeout_ns;
	if (!PyArg_ParseTuple(args, "iOOOO:resolve", &fd, &src, &local_text,
			      &peer_text, &timeout) ||
	    mac_arg(src, "src_mac", smac) < 0 ||
	    core_parse_address("local_addr", local_text, local, &lfam) < 0 ||
	    core_parse_address("peer_addr", peer_text, peer, &pfam) < 0 ||
	    core_seconds_arg("timeout", timeout, &timeout_ns) < 0)
		return NULL;
	if (lfam != pfam)
		return PyErr_Format(PyExc_ValueError,
				    "local_addr %R and peer_addr %R are of "
				    "different families",
				    local_text, peer_text);
	static const uint8_t none[6];
	struct fp_link *link;
	if (packet_link(fd, smac, none, local_text, &link) < 0)
		return NULL;
	PyObject *mac = resolve_wait(link, peer, timeout_ns);
	fp_link_close(link); /* fd stays the caller's */
	return mac;
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
static PyObject *raw_open_error(PyTypeObject *type, int rc, PyObject *remote,
				PyObject *src, int ifindex)
{
	core_state *st = core_state_of_type(type);
	switch (rc) {
	case -EPERM:
	case -EACCES:
		return PyErr_Format(
			st->permission_error,
			"raw sockets towards %S need CAP_NET_RAW: run as root, or grant it "
			"(sudo setcap cap_net_raw,cap_net_admin+ep <python binary>)",
			remote);
	case -ENETUNREACH:
	case -EHOSTUNREACH:
		return PyErr_Format(st->error, "no route to %S%s", remote,
				    ifindex ? " through the interface given"
					    : "");
	case -EADDRNOTAVAIL:
		if (src != Py_None)
			return PyErr_Format(
				st->error,
				"src %R is not an address of this host", src);
		return PyErr_Format(st->error,
				    "no source address for the route to %S",
				    remote);
	case -ENODEV:
		return PyErr_Format(PyExc_ValueError,
				    "no interface with index %d", ifindex);
	default:
		errno = -rc;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
}

/* raw(remote_addr, remote_port, src=None, ifindex=0) -> (Engine, src, ifindex) */
static PyObject *engine_raw(PyObject *cls, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = { "remote_addr", "remote_port", "src", "ifindex",
			      NULL };
	PyObject *remote, *remote_port, *src = Py_None;
	int ifindex = 0, rc;
	uint16_t port;
	uint8_t raddr[16], local[16] = { 0 }, family, src_family;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|Oi:raw", kw, &remote,
					 &remote_port, &src, &ifindex) ||
	    core_parse_address("remote_addr", remote, raddr, &family) < 0 ||
	    core_port_arg("remote_port", remote_port, &port) < 0 ||
	    (src != Py_None &&
	     core_parse_address("src", src, local, &src_family) < 0))
		return NULL;
	if (src != Py_None && src_family != family)
		return PyErr_Format(
			PyExc_ValueError,
			"src %R and remote_addr %R are not of one IP version",
			src, remote);
	if (ifindex < 0)
		return PyErr_Format(PyExc_ValueError,
				    "ifindex must be >= 0, got %d", ifindex);
	struct fp_link *link;
	Py_BEGIN_ALLOW_THREADS
	rc = fp_link_raw_open(&link, family, raddr, port, local, &ifindex);
	Py_END_ALLOW_THREADS
	if (rc)
		return raw_open_error((PyTypeObject *)cls, rc, remote, src,
				      ifindex);
	EngineObject *engine = engine_wrap((PyTypeObject *)cls, link, NULL);
	if (!engine)
		return NULL;
	return Py_BuildValue("(NNi)", engine,
			     core_format_address(family, local), ifindex);
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
	/* connections hold a reference: none is left */
	fp_engine_free(self->engine);
	pthread_mutex_destroy(&self->lock);
	engine_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

int engine_open_check(EngineObject *self)
{
	if (self->engine)
		return 0;
	PyErr_SetString(core_state_of_type(Py_TYPE(self))->error,
			"the lab or link is closed");
	return -1;
}

int engine_lock(EngineObject *self)
{
	core_lock(&self->lock);
	if (self->engine)
		return 0;
	core_unlock(&self->lock);
	return engine_open_check(self);
}

/* Receive for up to timeout_ms without the GIL: how many segments came, or
 * -1 with an exception (a signal's, such as KeyboardInterrupt). A closed
 * engine receives nothing: the caller's next look under the mutex says
 * closed. */
static int engine_poll_nogil(EngineObject *self, int timeout_ms)
{
	int rc;
	Py_BEGIN_ALLOW_THREADS
	pthread_mutex_lock(&self->lock); /* without the GIL: may block */
	rc = self->engine ? fp_engine_poll(self->engine, timeout_ms) : 0;
	pthread_mutex_unlock(&self->lock);
	Py_END_ALLOW_THREADS
	if (rc == -EINTR)
		rc = 0;
	if (rc < 0) {
		errno = -rc;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	return PyErr_CheckSignals() < 0 ? -1 : rc;
}

/* One slice of a wait for something to arrive before deadline: poll the
 * link for at most WAIT_SLICE_MS, so that signals are seen in between.
 * Returns 1 to look again, 0 once the deadline has passed (after a last
 * poll that does not wait: what is already there still counts), -1 with an
 * exception (a signal's, such as KeyboardInterrupt). */
int engine_wait_slice(EngineObject *self, uint64_t deadline)
{
	int slice = core_slice_ms(deadline, WAIT_SLICE_MS);
	if (engine_poll_nogil(self, slice) < 0)
		return -1;
	return slice > 0; /* the last poll, once passed, did not wait */
}

/* poll(timeout=0): receive what has come, waiting up to timeout for the
 * first segment. */
static PyObject *engine_poll(EngineObject *self, PyObject *args)
{
	PyObject *timeout = NULL;
	uint64_t wait_ns = 0;
	if (!PyArg_ParseTuple(args, "|O:poll", &timeout) ||
	    (timeout && core_seconds_arg("timeout", timeout, &wait_ns) < 0) ||
	    engine_open_check(self) < 0)
		return NULL;
	uint64_t deadline = fp_now_ns() + wait_ns;
	for (;;) {
		int slice = core_slice_ms(deadline, WAIT_SLICE_MS);
		int got = engine_poll_nogil(self, slice);
		if (got < 0)
			return NULL;
		if (got > 0 || slice == 0)
			break;
	}
	/* closed by another thread meanwhile */
	if (engine_open_check(self) < 0)
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *engine_stats(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	struct fp_engine_stats s;
	if (engine_lock(self) < 0)
		return NULL;
	fp_engine_stats(self->engine, &s);
	engine_unlock(self);
	return Py_BuildValue("{sKsKsKsKsK}", "received", s.received,
			     "unclaimed", s.unclaimed, "malformed", s.malformed,
			     "truncated", s.truncated, "bytes_held",
			     s.bytes_held);
}

/* fileno(): the descriptor the engine's link receives on, for an event
 * loop to watch (asyncio's add_reader): readable when poll(0) would take
 * something. It stays the link's: close() the engine only after the loop
 * stopped watching it. */
static PyObject *engine_fileno(EngineObject *self, PyObject *Py_UNUSED(ignored))
{
	if (engine_lock(self) < 0)
		return NULL;
	int fd = fp_engine_fd(self->engine);
	engine_unlock(self);
	return PyLong_FromLong(fd);
}

static PyObject *engine_has_tuple(EngineObject *self, PyObject *args)
{
	struct fp_tuple t;
	if (core_tuple_args(args, "has_tuple", &t) < 0 || engine_lock(self) < 0)
		return NULL;
	int has = fp_engine_has_tuple(self->engine, &t);
	engine_unlock(self);
	return PyBool_FromLong(has);
}


/* open(local_addr, local_port, remote_addr, remote_port, iss, time_wait, cls=None) */
static PyObject *engine_open(EngineObject *self, PyObject *args,
			     PyObject *kwargs)
{
	static char *kw[] = { "local_addr",  "local_port", "remote_addr",
			      "remote_port", "iss",	   "time_wait",
			      "cls",	     NULL };
	PyObject *la, *lp, *ra, *rp, *iss_arg, *time_wait_arg, *cls = NULL;
	unsigned long long iss;
	uint64_t time_wait;
	PyTypeObject *type;
	struct fp_tuple t;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOOO|O:open", kw, &la,
					 &lp, &ra, &rp, &iss_arg,
					 &time_wait_arg, &cls) ||
	    core_tuple_arg(la, lp, ra, rp, &t) < 0 ||
	    core_unsigned_arg(iss_arg, "iss", 0xffffffffu, &iss) < 0 ||
	    core_seconds_arg("time_wait", time_wait_arg, &time_wait) < 0 ||
	    connection_class_arg(self, cls, &type) < 0 || engine_lock(self) < 0)
		return NULL;
	struct fp_conn *conn;
	int rc = fp_conn_new(&conn, self->engine, &t, (uint32_t)iss, time_wait);
	engine_unlock(self);
	if (rc < 0) {
		if (rc == -EADDRINUSE)
			return PyErr_Format(
				PyExc_ValueError,
				"a connection %U:%S -> %U:%S is already open",
				la, lp, ra, rp);
		return PyErr_NoMemory();
	}
	return connection_wrap(self, type, conn);
}

static PyObject *engine_listen(EngineObject *self, PyObject *args)
{
	PyObject *addr, *port_arg;
	uint16_t port;
	uint8_t a[16], family;
	if (!PyArg_ParseTuple(args, "OO:listen", &addr, &port_arg) ||
	    core_parse_address("address", addr, a, &family) < 0 ||
	    core_port_arg("port", port_arg, &port) < 0)
		return NULL;
	PyTypeObject *type = core_state_of_type(Py_TYPE(self))->listener_type;
	ListenerObject *l = (ListenerObject *)type->tp_alloc(type, 0);
	if (!l)
		return NULL;
	l->engine = (EngineObject *)Py_NewRef(self);
	/* the allocation may have run code that closed it */
	if (engine_lock(self) < 0) {
		Py_DECREF(l);
		return NULL;
	}
	int rc = fp_listener_new(&l->listener, self->engine, family, a, port);
	engine_unlock(self);
	if (rc < 0) {
		Py_DECREF(l);
		return PyErr_NoMemory();
	}
	return (PyObject *)l;
}

/* capture_start(): the engine's capture keeps every segment from now on
 * (off by default: it grows with every segment, so only what asks for it,
 * Lab(capture=True) or a pcap recorder, pays for it). */
static PyObject *engine_capture_start(EngineObject *self,
				      PyObject *Py_UNUSED(ignored))
{
	if (engine_lock(self) < 0)
		return NULL;
	int rc = fp_engine_capture_start(self->engine);
	engine_unlock(self);
	if (rc < 0)
		return PyErr_NoMemory();
	Py_RETURN_NONE;
}

/* capture() -> [(Segment, IP packet)] or None: every segment sent or
 * received since capture_start(), in order, claimed by a connection or not;
 * None while the capture is off. Copied under the lock, built after. */
static PyObject *engine_capture(EngineObject *self,
				PyObject *Py_UNUSED(ignored))
{
	struct fp_trace *copy = NULL, *capture;
	int rc = 0;
	if (engine_lock(self) < 0)
		return NULL;
	capture = fp_engine_capture(self->engine);
	if (capture)
		rc = fp_trace_copy(capture, 0, fp_trace_len(capture), &copy);
	engine_unlock(self);
	if (rc < 0)
		return PyErr_NoMemory();
	if (!capture)
		Py_RETURN_NONE;
	core_state *st = core_state_of_type(Py_TYPE(self));
	PyObject *list = PyList_New(0);
	for (size_t i = 0; list && i < fp_trace_len(copy); i++) {
		struct fp_record rec;
		struct fp_segment seg;
		if (fp_trace_get(copy, i, &rec) < 0 ||
		    fp_segment_parse(&seg, rec.pkt, rec.len, NULL, 0) < 0)
			continue;
		PyObject *item = Py_BuildValue(
			"(Ny#)",
			segment_new_from(st, &seg, ns_to_s(rec.ts_ns),
					 rec.direction == FP_DIR_IN ? "in"
								    : "out"),
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
	core_lock(&self->lock);
	fp_engine_free(self->engine);
	self->engine = NULL;
	core_unlock(&self->lock);
	Py_RETURN_NONE;
}

static PyMethodDef engine_methods[] = {
	{ "close", (PyCFunction)engine_close, METH_NOARGS,
	  "close(): free the engine and its link; connections left become closed" },
	{ "pair", (PyCFunction)engine_pair, METH_NOARGS | METH_CLASS,
	  "pair() -> (Engine, Engine) joined by an in-memory link" },
	{ "raw", (PyCFunction)(void (*)(void))engine_raw,
	  METH_VARARGS | METH_KEYWORDS | METH_CLASS,
	  "raw(remote_addr, remote_port, src=None, ifindex=0) -> (Engine, src, ifindex): over raw IP "
	  "sockets towards a remote target; src and interface from the routing table unless given" },
	{ "poll", (PyCFunction)engine_poll, METH_VARARGS,
	  "poll(timeout=0): receive what the link has, waiting up to timeout seconds for the first "
	  "segment (an int or a float >= 0, at most threading.TIMEOUT_MAX: else ValueError or "
	  "OverflowError)" },
	{ "fileno", (PyCFunction)engine_fileno, METH_NOARGS,
	  "fileno() -> int: the link's descriptor, readable when poll(0) has something to take; "
	  "fp.Error once closed" },
	{ "stats", (PyCFunction)engine_stats, METH_NOARGS,
	  "counters of what no connection took; bytes_held: the heap the engine holds" },
	{ "capture_start", (PyCFunction)engine_capture_start, METH_NOARGS,
	  "capture_start(): keep every segment sent or received from now on (off by default)" },
	{ "capture", (PyCFunction)engine_capture, METH_NOARGS,
	  "capture() -> [(Segment, IP packet)] since capture_start(), claimed or not; None while off" },
	{ "resolve", (PyCFunction)engine_resolve, METH_VARARGS | METH_CLASS,
	  "resolve(fd, src_mac, local_addr, peer_addr, timeout) -> bytes or None\n\n"
	  "On a stack lab's TAP: ask who has peer_addr (ARP; IPv6: neighbour solicitation)\n"
	  "until it answers, answering for local_addr meanwhile; its MAC, or None after timeout." },
	{ "has_tuple", (PyCFunction)engine_has_tuple, METH_VARARGS,
	  "has_tuple(local_addr, local_port, remote_addr, remote_port) -> bool" },
	{ "open", (PyCFunction)(void (*)(void))engine_open,
	  METH_VARARGS | METH_KEYWORDS,
	  "open(local_addr, local_port, remote_addr, remote_port, iss, time_wait, cls=None) -> Connection\n\n"
	  "time_wait: seconds of TIME_WAIT (2MSL), >= 0 and at most threading.TIMEOUT_MAX." },
	{ "listen", (PyCFunction)engine_listen, METH_VARARGS,
	  "listen(address, port) -> Listener catching SYNs no connection claims" },
	{ NULL },
};

static PyType_Slot engine_slots[] = {
	{ Py_tp_doc,
	  "Engine(fd, src_mac, dst_mac, owner=None, *, answer=None): connections over an AF_PACKET link;\n"
	  "answer: our address, answered for on a stack lab's TAP (ARP, neighbour solicitation)" },
	{ Py_tp_new, engine_new },
	{ Py_tp_dealloc, engine_dealloc },
	{ Py_tp_traverse, engine_traverse },
	{ Py_tp_clear, engine_clear },
	{ Py_tp_methods, engine_methods },
	{ 0, NULL },
};

PyType_Spec engine_spec = {
	.name = "finprobe._core.Engine",
	.basicsize = sizeof(EngineObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
		 Py_TPFLAGS_IMMUTABLETYPE,
	.slots = engine_slots,
};
