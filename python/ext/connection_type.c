/*
 * connection_type.c: finprobe._core.Connection, our endpoint: its TCB,
 * send, take and trace, over an Engine's fp_conn.
 *
 * Every call into the fp_conn holds the Engine's mutex, as core.h says, and
 * checks under it that the connection and the engine are still open.
 */
#include "engine.h"

#include <stdlib.h>
#include <structmember.h>

typedef struct {
	PyObject_HEAD
	EngineObject *engine;
	struct fp_conn *conn; /* NULL once closed */
	/* The connection's record, a reference of our own: a trace outlives
	 * close() and the engine (API.md, Traces). Written by the engine, so
	 * read under its mutex while the connection is open. */
	struct fp_trace *trace;
	PyObject *weakreflist;
	PyObject *dict;
	/* What RFC 9293 says we answer to the segment last taken (tcb.c
	 * computes it; finprobe sends nothing by itself): read by tests that
	 * hold our state machine to a profile (_reply). */
	enum fp_reply last_reply;
} ConnectionObject;

int connection_class_arg(EngineObject *self, PyObject *cls, PyTypeObject **out)
{
	core_state *st = core_state_of_type(Py_TYPE(self));
	if (!cls || cls == Py_None) {
		*out = st->connection_type;
		return 0;
	}
	if (!PyType_Check(cls) ||
	    !PyType_IsSubtype((PyTypeObject *)cls, st->connection_type)) {
		PyErr_SetString(
			PyExc_TypeError,
			"cls must be a subclass of finprobe._core.Connection");
		return -1;
	}
	*out = (PyTypeObject *)cls;
	return 0;
}

PyObject *connection_wrap(EngineObject *engine, PyTypeObject *cls,
			  struct fp_conn *conn)
{
	ConnectionObject *self = (ConnectionObject *)cls->tp_alloc(cls, 0);
	core_lock(&engine->lock);
	/* code the allocation ran may have closed the engine, and conn with it */
	int open = engine->engine != NULL;
	if (open && self)
		self->trace = fp_trace_ref(fp_conn_trace(conn));
	else if (open)
		fp_conn_free(conn);
	core_unlock(&engine->lock);
	if (!self)
		return NULL;
	self->engine = (EngineObject *)Py_NewRef(engine);
	self->conn = open ? conn : NULL;
	return (PyObject *)self;
}

/* Free the fp_conn, once. Also from tp_clear and dealloc, which the
 * collector may run at any allocation of this thread: never while this
 * thread holds the mutex, since no code holding it allocates (core.h), so
 * core_lock ends; another thread holding it lets go without the GIL. */
static void connection_release(ConnectionObject *self)
{
	EngineObject *engine = self->engine;
	if (!engine || !self->conn)
		return;
	core_lock(&engine->lock);
	struct fp_conn *conn = self->conn;
	self->conn = NULL;
	if (conn && engine->engine) /* else freed with its engine already */
		fp_conn_free(conn);
	core_unlock(&engine->lock);
}

static int connection_traverse(ConnectionObject *self, visitproc visit,
			       void *arg)
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
	fp_trace_free(self->trace); /* C memory only: no lock, no Python */
	tp->tp_free(self);
	Py_DECREF(tp);
}

static int connection_is_closed(ConnectionObject *self)
{
	return !self->conn || !self->engine || !self->engine->engine;
}

static void *closed_error(ConnectionObject *self)
{
	core_state *st = core_state_of_type(Py_TYPE(self));
	PyErr_SetString(st ? st->error : PyExc_RuntimeError,
			"the connection is closed");
	return NULL;
}

/* Take the engine's mutex and return the fp_conn, or NULL with fp.Error
 * (the mutex not held) if the connection or its engine is closed. Checked
 * under the mutex: caller code run earlier in the call (a generator
 * payload, __index__) or another thread while this one waited for the
 * mutex may have closed either. */
static struct fp_conn *connection_lock(ConnectionObject *self)
{
	EngineObject *engine = self->engine;
	if (connection_is_closed(self))
		return closed_error(self);
	core_lock(&engine->lock);
	if (!connection_is_closed(self))
		return self->conn;
	core_unlock(&engine->lock);
	return closed_error(self);
}

static void connection_unlock(ConnectionObject *self)
{
	engine_unlock(self->engine);
}

static PyObject *connection_close(ConnectionObject *self,
				  PyObject *Py_UNUSED(ignored))
{
	connection_release(self);
	Py_RETURN_NONE;
}

/* ---- send ---- */

static int optional_u32(PyObject *value, const char *name,
			unsigned long long max, uint32_t *out, unsigned *forced,
			unsigned bit)
{
	unsigned long long v;
	if (!value || value == Py_None)
		return 0;
	if (core_unsigned_arg(value, name, max, &v) < 0)
		return -1;
	*out = (uint32_t)v;
	*forced |= bit;
	return 0;
}

/* Build the fields of a Segment from send()'s arguments through the Segment
 * constructor, so validation and messages are the same as Segment(...).
 * This runs the caller's code (a generator payload, an options iterable),
 * which may close the connection: it is looked at only afterwards. */
static SegmentObject *send_template(ConnectionObject *self, PyObject *payload,
				    PyObject *flags, PyObject *options)
{
	core_state *st = core_state_of_type(Py_TYPE(self));
	PyObject *kw =
		Py_BuildValue("{sOsO}", "payload", payload, "flags", flags);
	if (!kw || (options != Py_None &&
		    PyDict_SetItemString(kw, "options", options) < 0)) {
		Py_XDECREF(kw);
		return NULL;
	}
	PyObject *empty = PyTuple_New(0);
	PyObject *seg =
		empty ? PyObject_Call((PyObject *)st->segment_type, empty, kw)
		      : NULL;
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
	PyObject *msg = PyUnicode_FromFormat(
		"send: the link refused the segment (%s, %zu bytes of payload)",
		strerror(-rc), payload_len);
	if (msg)
		PyObject_SetAttrString(err, "strerror", msg);
	Py_XDECREF(msg);
	PyErr_SetObject(PyExc_OSError, err);
	Py_DECREF(err);
}

/* Send seg under the mutex: 0 and the stamp it went out with in *ts_ns,
 * a negative errno from the engine, or -EBADF with fp.Error if closed. */
static int send_locked(ConnectionObject *self, struct fp_segment *seg,
		       unsigned forced, uint64_t *ts_ns)
{
	struct fp_conn *conn = connection_lock(self);
	if (!conn)
		return -EBADF;
	int rc = fp_conn_send(conn, seg, forced);
	struct fp_record rec = { 0 };
	if (rc == 0)
		fp_trace_get(self->trace, fp_trace_len(self->trace) - 1, &rec);
	connection_unlock(self);
	*ts_ns = rec.ts_ns;
	return rc;
}

/* Send seg (no caller code runs meanwhile): 0, or -1 with the exception
 * send() raises. */
static int send_segment(ConnectionObject *self, struct fp_segment *seg,
			unsigned forced, uint64_t *ts_ns)
{
	int rc = send_locked(self, seg, forced, ts_ns);
	if (rc == -EINVAL)
		PyErr_Format(
			PyExc_ValueError,
			"send: the segment cannot be built (options over 40 bytes?)");
	else if (rc < 0 && rc != -EBADF)
		send_error(rc, seg->payload_len);
	return rc < 0 ? -1 : 0;
}

/* The payload of a segment that has none: fp_segment_build copies
 * payload_len bytes from it, and memcpy is not given NULL. */
static const uint8_t no_payload[1];

/* A segment with send()'s defaults (as Segment() makes them: window 65535,
 * no options, no payload) and these flags. */
static void plain_segment(struct fp_segment *seg, uint8_t flags)
{
	memset(seg, 0, sizeof(*seg));
	seg->flags = flags;
	seg->window = 65535;
	seg->payload = no_payload;
}

/* The flags of send()'s common call, a str of letters ("FA"), read here
 * rather than through a Segment template: 1 with *bits set; 0 for anything
 * else, left to the template, which also words the error. */
static int plain_flags(PyObject *flags, uint8_t *bits)
{
	Py_ssize_t n;
	const char *text = PyUnicode_CheckExact(flags)
				   ? PyUnicode_AsUTF8AndSize(flags, &n)
				   : NULL;
	if (!text) {
		PyErr_Clear();
		return 0;
	}
	return strlen(text) == (size_t)n && fp_flags_parse(text, bits) == 0;
}

static PyObject *connection_send(ConnectionObject *self, PyObject *args,
				 PyObject *kwargs)
{
	static char *kw[] = { "payload", "flags",   "seq",	"ack",
			      "window",	 "options", "checksum", NULL };
	PyObject *payload = NULL, *flags = NULL, *seq = NULL, *ack = NULL,
		 *window = NULL, *options = Py_None, *checksum = Py_None;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O$OOOOOO:send", kw,
					 &payload, &flags, &seq, &ack, &window,
					 &options, &checksum))
		return NULL;
	struct fp_segment seg;
	SegmentObject *tmpl = NULL;
	uint8_t bits = FP_ACK;
	if (!payload && options == Py_None &&
	    (!flags || plain_flags(flags, &bits))) {
		plain_segment(&seg, bits); /* the common call: no template */
	} else {
		PyObject *empty = PyBytes_FromStringAndSize(NULL, 0),
			 *a = PyUnicode_FromString("A");
		tmpl = empty && a
			       ? send_template(self, payload ? payload : empty,
					       flags ? flags : a, options)
			       : NULL;
		Py_XDECREF(empty);
		Py_XDECREF(a);
		if (!tmpl)
			return NULL;
		segment_unpack(tmpl, &seg);
	}
	unsigned forced = 0, checksum_given = 0;
	uint32_t window32 = 0, checksum32 = 0;
	if (optional_u32(seq, "seq", 0xffffffffu, &seg.seq, &forced,
			 FP_FORCE_SEQ) < 0 ||
	    optional_u32(ack, "ack", 0xffffffffu, &seg.ack, &forced,
			 FP_FORCE_ACK) < 0 ||
	    optional_u32(window, "window", 0xffff, &window32, &forced,
			 FP_FORCE_WINDOW) < 0 ||
	    optional_u32(checksum, "checksum", 0xffff, &checksum32,
			 &checksum_given, 1) < 0) {
		Py_XDECREF(tmpl);
		return NULL;
	}
	seg.window = (uint16_t)window32;
	seg.force_checksum = (uint8_t)checksum_given;
	seg.checksum = (uint16_t)checksum32;
	uint64_t ts_ns;
	/* seg.payload points into tmpl's payload, which may be the only copy
	 * (of a bytearray, a memoryview ...): tmpl lives until seg is read. */
	PyObject *result =
		send_segment(self, &seg, forced, &ts_ns) < 0
			? NULL
			: segment_new_from(core_state_of_type(Py_TYPE(self)),
					   &seg, ns_to_s(ts_ns), "out");
	Py_XDECREF(tmpl);
	return result;
}

/* _send_flags(flags) -> Segment: send(flags=flags) for a str of letters
 * (fin, ack, rst), without send()'s keyword parsing; anything else goes
 * to send() itself, which words the error. */
static PyObject *connection_send_flags(ConnectionObject *self, PyObject *flags)
{
	struct fp_segment seg;
	uint8_t bits;
	uint64_t ts_ns;
	if (!plain_flags(flags, &bits)) {
		PyObject *kw = Py_BuildValue("{sO}", "flags", flags),
			 *empty = kw ? PyTuple_New(0) : NULL;
		PyObject *result = empty ? connection_send(self, empty, kw)
					 : NULL;
		Py_XDECREF(empty);
		Py_XDECREF(kw);
		return result;
	}
	plain_segment(&seg, bits);
	return send_segment(self, &seg, 0, &ts_ns) < 0
		       ? NULL
		       : segment_new_from(core_state_of_type(Py_TYPE(self)),
					  &seg, ns_to_s(ts_ns), "out");
}

/* ---- take ---- */

/* Take the next received segment, if one waits, into *seg, its payload
 * copied to *payload (malloc'd; the caller frees it): the engine's copy
 * lives only until its next poll, and the Segment is made once the mutex
 * is released. 1 if one was taken, 0 if none waits, -1 with an exception. */
static int take_locked(ConnectionObject *self, struct fp_segment *seg,
		       uint64_t *ts_ns, uint8_t **payload)
{
	struct fp_conn *conn = connection_lock(self);
	if (!conn)
		return -1;
	struct fp_record rec;
	enum fp_reply reply;
	int rc = fp_conn_take(conn, &rec, seg, &reply);
	uint8_t *copy = NULL;
	if (rc == 0 && seg->payload_len && (copy = malloc(seg->payload_len)))
		memcpy(copy, seg->payload, seg->payload_len);
	connection_unlock(self);
	if (rc < 0)
		return 0;
	if (seg->payload_len && !copy) {
		self->last_reply = reply;
		PyErr_NoMemory(); /* taken all the same: the TCB has moved */
		return -1;
	}
	seg->payload = copy;
	*payload = copy;
	*ts_ns = rec.ts_ns;
	self->last_reply = reply;
	return 1;
}

/* Take the next received segment before deadline (ns), waiting in slices
 * that let signals through: 1 with it in *seg (its payload malloc'd in
 * *payload, the caller frees it), 0 once deadline has passed with none,
 * -1 with an exception. */
static int take_wait(ConnectionObject *self, uint64_t deadline,
		     struct fp_segment *seg, uint64_t *ts_ns, uint8_t **payload)
{
	for (int more = 1;;) {
		int got = take_locked(self, seg, ts_ns, payload);
		if (got != 0)
			return got;
		if (!more)
			return 0;
		more = engine_wait_slice(self->engine, deadline);
		if (more < 0)
			return -1;
	}
}

/* The next received segment, taken (the TCB moves), or None after timeout
 * seconds (core_seconds_arg's rule). */
static PyObject *connection_take(ConnectionObject *self, PyObject *args)
{
	PyObject *timeout = NULL;
	uint64_t wait_ns = 0;
	if (!PyArg_ParseTuple(args, "|O:take", &timeout) ||
	    (timeout && core_seconds_arg("timeout", timeout, &wait_ns) < 0))
		return NULL;
	struct fp_segment seg;
	uint64_t ts_ns;
	uint8_t *payload = NULL;
	int got =
		take_wait(self, fp_now_ns() + wait_ns, &seg, &ts_ns, &payload);
	if (got <= 0)
		return got < 0 ? NULL : Py_NewRef(Py_None);
	PyObject *result = segment_new_from(core_state_of_type(Py_TYPE(self)),
					    &seg, ns_to_s(ts_ns), "in");
	free(payload);
	return result;
}

/* ---- fast paths: a lifecycle's calls without Python-level layers ---- */

/* _connect(timeout) -> True, None or Segment: the handshake of
 * Connection._handshake with its default SYN options, in one call. Our SYN
 * (MSS 1460: connection.py's DEFAULT_SYN_OPTIONS), the peer's answer taken
 * within timeout seconds and, if it is a SYN-ACK, our ACK: True. None if
 * nothing came; the answer if it was anything else (nothing more sent):
 * the caller words the failure as before. */
static PyObject *connection_connect(ConnectionObject *self, PyObject *timeout)
{
	uint64_t wait_ns, ts_ns;
	if (core_seconds_arg("timeout", timeout, &wait_ns) < 0)
		return NULL;
	struct fp_segment seg;
	plain_segment(&seg, FP_SYN);
	seg.n_options = 1;
	seg.options[0].kind = FP_OPT_MSS;
	seg.options[0].v.mss = 1460;
	if (send_segment(self, &seg, 0, &ts_ns) < 0)
		return NULL;
	uint8_t *payload = NULL;
	int got =
		take_wait(self, fp_now_ns() + wait_ns, &seg, &ts_ns, &payload);
	if (got <= 0)
		return got < 0 ? NULL : Py_NewRef(Py_None);
	if ((seg.flags & (FP_SYN | FP_ACK | FP_RST)) == (FP_SYN | FP_ACK)) {
		free(payload);
		plain_segment(&seg, FP_ACK);
		return send_segment(self, &seg, 0, &ts_ns) < 0
			       ? NULL
			       : Py_NewRef(Py_True);
	}
	PyObject *answer = segment_new_from(core_state_of_type(Py_TYPE(self)),
					    &seg, ns_to_s(ts_ns), "in");
	free(payload);
	return answer;
}

/* What an expect() asks of a segment: the fields given (has, a bit each). */
enum {
	WANT_FLAGS = 1,
	WANT_SEQ = 2,
	WANT_ACK = 4,
	WANT_WINDOW = 8,
	WANT_PAYLOAD = 16
};
struct want {
	unsigned has;
	uint8_t flags;
	uint32_t seq, ack, window;
	PyObject *payload; /* bytes, ours */
};

/* The name of value's type, as type(value).__name__ says it. */
static void wrong_type(const char *what, PyObject *value)
{
	PyObject *name = PyType_GetName(Py_TYPE(value));
	if (name)
		PyErr_Format(PyExc_TypeError, "%s, not %U", what, name);
	Py_XDECREF(name);
}

/* flags: a str (a subclass too) of "FSRPAUEC" letters, each at most once;
 * an int is not flags here, as in connection.py's _expectation. */
static int want_flags(PyObject *flags, struct want *w)
{
	Py_ssize_t n;
	if (flags == Py_None)
		return 0;
	if (!PyUnicode_Check(flags)) {
		wrong_type("flags must be a str of \"FSRPAUEC\" letters",
			   flags);
		return -1;
	}
	const char *text = PyUnicode_AsUTF8AndSize(flags, &n);
	if (!text) {
		PyErr_Clear(); /* a lone surrogate: not a letter either */
	} else if (strlen(text) == (size_t)n &&
		   fp_flags_parse(text, &w->flags) == 0) {
		w->has |= WANT_FLAGS;
		return 0;
	}
	PyErr_Format(PyExc_ValueError,
		     "flags: %R is not a set of the letters F S R P A U E C "
		     "(each at most once)",
		     flags);
	return -1;
}

static int want_number(PyObject *value, const char *name,
		       unsigned long long top, uint32_t *out, unsigned *has,
		       unsigned bit)
{
	unsigned long long v;
	if (value == Py_None)
		return 0;
	switch (core_unsigned_check(value, top, &v)) {
	case CORE_NUM_OK:
		*out = (uint32_t)v;
		*has |= bit;
		return 0;
	case CORE_NUM_TYPE: {
		char what[32];
		snprintf(what, sizeof(what), "%s must be an int", name);
		wrong_type(what, value);
		return -1;
	}
	case CORE_NUM_RANGE:
		PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu, got %S",
			     name, top, value);
		return -1;
	default:
		return -1;
	}
}

/* payload: bytes-like (a copy of its bytes kept), not a str, an int or an
 * iterable of ints. */
static int want_payload(PyObject *payload, struct want *w)
{
	if (payload == Py_None)
		return 0;
	if (PyUnicode_Check(payload) || !PyObject_CheckBuffer(payload)) {
		wrong_type("payload must be bytes-like", payload);
		return -1;
	}
	w->payload = PyBytes_FromObject(payload);
	if (!w->payload)
		return -1;
	w->has |= WANT_PAYLOAD;
	return 0;
}

static int want_matches(const struct want *w, const struct fp_segment *seg)
{
	return (!(w->has & WANT_FLAGS) || seg->flags == w->flags) &&
	       (!(w->has & WANT_SEQ) || seg->seq == w->seq) &&
	       (!(w->has & WANT_ACK) || seg->ack == w->ack) &&
	       (!(w->has & WANT_WINDOW) || seg->window == w->window) &&
	       (!(w->has & WANT_PAYLOAD) ||
		((size_t)PyBytes_GET_SIZE(w->payload) == seg->payload_len &&
		 (!seg->payload_len || /* then seg->payload may be NULL */
		  !memcmp(PyBytes_AS_STRING(w->payload), seg->payload,
			  seg->payload_len))));
}

/* _expect(flags, seq, ack, payload, window, timeout) -> Segment, None or
 * (Segment,): Connection.expect's checks and wait in one call, its fields
 * checked first with its messages. The next segment taken within timeout:
 * itself if it matches every field given; (it,) if not; None if nothing
 * came. The caller words the failure. */
static PyObject *connection_expect(ConnectionObject *self,
				   PyObject *const *args, Py_ssize_t nargs)
{
	if (nargs != 6)
		return PyErr_Format(PyExc_TypeError,
				    "_expect takes 6 arguments (%zd given)",
				    nargs);
	struct want w = { 0 };
	uint64_t wait_ns, ts_ns;
	if (want_flags(args[0], &w) < 0 ||
	    want_number(args[1], "seq", 0xffffffffu, &w.seq, &w.has, WANT_SEQ) <
		    0 ||
	    want_number(args[2], "ack", 0xffffffffu, &w.ack, &w.has, WANT_ACK) <
		    0 ||
	    want_number(args[4], "window", 0xffff, &w.window, &w.has,
			WANT_WINDOW) < 0 ||
	    want_payload(args[3], &w) < 0 ||
	    core_seconds_arg("timeout", args[5], &wait_ns) < 0) {
		Py_XDECREF(w.payload);
		return NULL;
	}
	struct fp_segment seg;
	uint8_t *payload = NULL;
	int got =
		take_wait(self, fp_now_ns() + wait_ns, &seg, &ts_ns, &payload);
	PyObject *result = NULL;
	if (got == 0)
		result = Py_NewRef(Py_None);
	if (got > 0) {
		int match = want_matches(&w, &seg);
		result = segment_new_from(core_state_of_type(Py_TYPE(self)),
					  &seg, ns_to_s(ts_ns), "in");
		if (result && !match)
			Py_SETREF(result, PyTuple_Pack(1, result));
		free(payload);
	}
	Py_XDECREF(w.payload);
	return result;
}

/* ---- trace ---- */

static PyObject *trace_row(core_state *st, const struct fp_record *rec)
{
	struct fp_segment seg;
	if (fp_segment_parse(&seg, rec->pkt, rec->len, NULL, 0) < 0)
		return PyErr_Format(
			st->parse_error,
			"a recorded packet could not be parsed again");
	int in = rec->direction == FP_DIR_IN;
	return Py_BuildValue(
		"(Nsiy#)",
		segment_new_from(st, &seg, ns_to_s(rec->ts_ns),
				 in ? "in" : "out"),
		in && !rec->taken ? "" : fp_state_name(rec->state_after),
		rec->taken || !in, rec->pkt, (Py_ssize_t)rec->len);
}

/* A copy of the trace's records [start, stop) (a Python slice's meaning:
 * negative counts from the end) and of its transitions, made under the
 * engine's mutex (the engine appends while the connection is open;
 * afterwards nothing does, and the mutex costs nothing). NULL with an
 * exception. */
static struct fp_trace *trace_copy(ConnectionObject *self, Py_ssize_t start,
				   Py_ssize_t stop)
{
	struct fp_trace *copy = NULL;
	int rc = 0;
	if (!self->trace) { /* closed before it was ever open */
		rc = fp_trace_new(&copy);
		return rc < 0 ? PyErr_NoMemory(), NULL : copy;
	}
	/* NULL only while the collector clears us */
	EngineObject *engine = self->engine;
	if (engine)
		core_lock(&engine->lock);
	/* arithmetic only */
	PySlice_AdjustIndices((Py_ssize_t)fp_trace_len(self->trace), &start,
			      &stop, 1);
	rc = fp_trace_copy(self->trace, (size_t)start,
			   (size_t)(stop > start ? stop : start), &copy);
	if (engine)
		core_unlock(&engine->lock);
	if (rc < 0) {
		PyErr_NoMemory();
		return NULL;
	}
	return copy;
}

/* _trace(start=0, stop=None): the rows [start:stop] of the trace, as a
 * slice of a list would give them; readable after close(). */
static PyObject *connection_trace(ConnectionObject *self, PyObject *args)
{
	Py_ssize_t start = 0, stop = PY_SSIZE_T_MAX;
	PyObject *stop_arg = Py_None;
	if (!PyArg_ParseTuple(args, "|nO:_trace", &start, &stop_arg))
		return NULL;
	if (stop_arg != Py_None &&
	    (stop = PyNumber_AsSsize_t(stop_arg, PyExc_OverflowError)) == -1 &&
	    PyErr_Occurred())
		return NULL;
	struct fp_trace *copy = trace_copy(self, start, stop);
	if (!copy)
		return NULL;
	core_state *st = core_state_of_type(Py_TYPE(self));
	size_t n = fp_trace_len(copy);
	PyObject *list = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; list && i < n; i++) {
		struct fp_record rec;
		PyObject *item = fp_trace_get(copy, i, &rec) < 0
					 ? NULL
					 : trace_row(st, &rec);
		if (!item) {
			Py_CLEAR(list);
			break;
		}
		PyList_SET_ITEM(list, (Py_ssize_t)i, item);
	}
	fp_trace_free(copy);
	return list;
}

/* transitions(): our state machine's changes, readable after close(). */
static PyObject *connection_transitions(ConnectionObject *self,
					PyObject *Py_UNUSED(ignored))
{
	const struct fp_transition *t;
	/* no records */
	struct fp_trace *copy =
		trace_copy(self, PY_SSIZE_T_MAX, PY_SSIZE_T_MAX);
	if (!copy)
		return NULL;
	size_t n = fp_trace_transitions(copy, &t);
	PyObject *list = PyList_New((Py_ssize_t)n);
	for (size_t i = 0; list && i < n; i++) {
		/* why is a string literal of tcb.c: it outlives the copy */
		PyObject *item = Py_BuildValue("(dsss)", ns_to_s(t[i].when_ns),
					       fp_state_name(t[i].from),
					       fp_state_name(t[i].to),
					       t[i].why ? t[i].why : "");
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

/* A copy of the TCB now (TIME_WAIT run out if its time has come), or -1
 * with fp.Error if closed. A copy: the fp_conn may be freed, by another
 * thread, as soon as the mutex is released. */
static int tcb_now(ConnectionObject *self, struct fp_tcb *out)
{
	struct fp_conn *conn = connection_lock(self);
	if (!conn)
		return -1;
	struct fp_tcb *tcb = fp_conn_tcb(conn);
	fp_tcb_tick(tcb, fp_now_ns());
	*out = *tcb;
	connection_unlock(self);
	return 0;
}

#define TCB_FIELD(name)                                                        \
	static PyObject *get_##name(ConnectionObject *self, void *c)           \
	{                                                                      \
		struct fp_tcb tcb;                                             \
		return tcb_now(self, &tcb) < 0                                 \
			       ? NULL                                          \
			       : PyLong_FromUnsignedLong(tcb.name);            \
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
	struct fp_tcb tcb;
	return tcb_now(self, &tcb) < 0
		       ? NULL
		       : PyUnicode_FromString(fp_state_name(tcb.state));
}

/* The 4-tuple, copied under the mutex; -1 with fp.Error if closed. */
static int tuple_now(ConnectionObject *self, struct fp_tuple *out)
{
	struct fp_conn *conn = connection_lock(self);
	if (!conn)
		return -1;
	*out = *fp_conn_tuple(conn);
	connection_unlock(self);
	return 0;
}

static PyObject *endpoint(int family, const uint8_t *addr, uint16_t port)
{
	return Py_BuildValue("(Ni)", core_format_address(family, addr), port);
}

static PyObject *get_local(ConnectionObject *self, void *c)
{
	struct fp_tuple t;
	return tuple_now(self, &t) < 0
		       ? NULL
		       : endpoint(t.family, t.local, t.local_port);
}

static PyObject *get_remote(ConnectionObject *self, void *c)
{
	struct fp_tuple t;
	return tuple_now(self, &t) < 0
		       ? NULL
		       : endpoint(t.family, t.remote, t.remote_port);
}

static PyObject *get_trace_len(ConnectionObject *self, void *c)
{
	size_t n = 0;
	if (self->trace && self->engine) {
		core_lock(&self->engine->lock);
		n = fp_trace_len(self->trace);
		core_unlock(&self->engine->lock);
	}
	return PyLong_FromSize_t(n);
}

static PyObject *get_closed(ConnectionObject *self, void *c)
{
	return PyBool_FromLong(connection_is_closed(self));
}

static PyObject *get_pending(ConnectionObject *self, void *c)
{
	struct fp_conn *conn = connection_lock(self);
	if (!conn)
		return NULL;
	size_t n = fp_conn_pending(conn);
	connection_unlock(self);
	return PyLong_FromSize_t(n);
}

static PyObject *get_time_wait_left(ConnectionObject *self, void *c)
{
	struct fp_tcb tcb;
	if (tcb_now(self, &tcb) < 0)
		return NULL;
	if (tcb.state != FP_STATE_TIME_WAIT)
		Py_RETURN_NONE;
	uint64_t now = fp_now_ns();
	return PyFloat_FromDouble(tcb.time_wait_until > now
					  ? ns_to_s(tcb.time_wait_until - now)
					  : 0);
}

/* "", "ACK", "CHALLENGE_ACK" or "RST": enum fp_reply's names, as
 * _core.Tcb.on_segment returns them. */
static PyObject *get_reply(ConnectionObject *self, void *c)
{
	static const char *const names[] = { "", "ACK", "CHALLENGE_ACK",
					     "RST" };
	unsigned reply = (unsigned)self->last_reply;

	return PyUnicode_FromString(reply < 4 ? names[reply] : "");
}

static PyGetSetDef connection_getset[] = {
	{ "_state_name", (getter)get_state_name, NULL,
	  "our state's RFC 9293 name", NULL },
	{ "iss", (getter)get_iss, NULL, "our initial sequence number", NULL },
	{ "irs", (getter)get_irs, NULL, "the peer's initial sequence number",
	  NULL },
	{ "snd_una", (getter)get_snd_una, NULL,
	  "oldest unacknowledged sequence number", NULL },
	{ "snd_nxt", (getter)get_snd_nxt, NULL, "next sequence number to send",
	  NULL },
	{ "snd_wnd", (getter)get_snd_wnd, NULL, "the peer's advertised window",
	  NULL },
	{ "rcv_nxt", (getter)get_rcv_nxt, NULL, "next sequence number expected",
	  NULL },
	{ "rcv_wnd", (getter)get_rcv_wnd, NULL, "our receive window", NULL },
	{ "local", (getter)get_local, NULL, "(address, port) of our end",
	  NULL },
	{ "remote", (getter)get_remote, NULL, "(address, port) of the peer",
	  NULL },
	{ "_trace_len", (getter)get_trace_len, NULL,
	  "segments in the trace, both ways", NULL },
	{ "closed", (getter)get_closed, NULL,
	  "whether close() released the connection", NULL },
	{ "pending", (getter)get_pending, NULL,
	  "received segments not taken yet", NULL },
	{ "time_wait_left", (getter)get_time_wait_left, NULL,
	  "seconds left in TIME_WAIT, or None", NULL },
	{ "_reply", (getter)get_reply, NULL,
	  "what RFC 9293 says we answer to the segment last taken: \"\", \"ACK\", "
	  "\"CHALLENGE_ACK\" or \"RST\" (finprobe sends nothing by itself)",
	  NULL },
	{ "__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL,
	  NULL },
	{ NULL },
};

static PyMemberDef connection_members[] = {
	{ "__weaklistoffset__", T_PYSSIZET,
	  offsetof(ConnectionObject, weakreflist), READONLY },
	{ "__dictoffset__", T_PYSSIZET, offsetof(ConnectionObject, dict),
	  READONLY },
	{ NULL },
};

static PyMethodDef connection_methods[] = {
	{ "send", (PyCFunction)(void (*)(void))connection_send,
	  METH_VARARGS | METH_KEYWORDS,
	  "send(payload=b\"\", *, flags=\"A\", seq=None, ack=None, window=None, options=None, "
	  "checksum=None) -> Segment\n\nUnset fields come from our state (seq = SND.NXT, ack = RCV.NXT)." },
	{ "_take", (PyCFunction)connection_take, METH_VARARGS,
	  "_take(timeout=0) -> Segment or None: the next received segment; our state moves.\n\n"
	  "timeout: seconds, an int or a float >= 0 (ValueError) and at most threading.TIMEOUT_MAX "
	  "(OverflowError)." },
	{ "_send_flags", (PyCFunction)connection_send_flags, METH_O,
	  "_send_flags(flags) -> Segment: send(flags=flags), the rest from our state" },
	{ "_connect", (PyCFunction)connection_connect, METH_O,
	  "_connect(timeout) -> True, None or Segment: SYN (MSS 1460), the answer within timeout, "
	  "our ACK if it is a SYN-ACK (True); None if nothing came, else the answer, nothing more sent" },
	{ "_expect", (PyCFunction)(void (*)(void))connection_expect,
	  METH_FASTCALL,
	  "_expect(flags, seq, ack, payload, window, timeout) -> Segment, None or (Segment,): the next "
	  "segment taken within timeout, itself if it has every field given (None: ignored), (it,) if "
	  "not; None if nothing came. Fields checked first, as Connection.expect checks them." },
	{ "_trace", (PyCFunction)connection_trace, METH_VARARGS,
	  "_trace(start=0, stop=None) -> [(Segment, state after, taken, IP packet)] both ways, in "
	  "order, sliced as a list is; readable after close()" },
	{ "transitions", (PyCFunction)connection_transitions, METH_NOARGS,
	  "transitions() -> [(ts, from, to, why)] of our state machine; readable after close()" },
	{ "close", (PyCFunction)connection_close, METH_NOARGS,
	  "close(): release the connection; sends nothing" },
	{ NULL },
};

static PyType_Slot connection_slots[] = {
	{ Py_tp_doc,
	  "The C side of a connection: our endpoint's TCB, its sends, receives and trace." },
	{ Py_tp_dealloc, connection_dealloc },
	{ Py_tp_traverse, connection_traverse },
	{ Py_tp_clear, connection_clear },
	{ Py_tp_getset, connection_getset },
	{ Py_tp_members, connection_members },
	{ Py_tp_methods, connection_methods },
	{ 0, NULL },
};

PyType_Spec connection_spec = {
	.name = "finprobe._core.Connection",
	.basicsize = sizeof(ConnectionObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
	.slots = connection_slots,
};
