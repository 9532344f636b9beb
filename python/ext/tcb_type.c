/*
 * tcb_type.c: finprobe._core.Tcb, RFC 9293's state machine (tcb.c) on its
 * own, fed segments by hand. The same code as our endpoint's, so it can
 * also stand for the peer: run over a trace from the peer's side, it says
 * what state RFC 9293 puts the peer in after each segment.
 */
#include "core.h"

#include <math.h>

typedef struct {
	PyObject_HEAD
	struct fp_tcb tcb;
	PyObject *transitions; /* list of (ts, from, to, why) */
} TcbObject;

static void tcb_record(void *ctx, const struct fp_transition *t)
{
	TcbObject *self = ctx;
	PyObject *item = Py_BuildValue("(dsss)", (double)t->when_ns / 1e9,
				       fp_state_name(t->from),
				       fp_state_name(t->to),
				       t->why ? t->why : "");
	if (!item || PyList_Append(self->transitions, item) < 0)
		PyErr_Clear(); /* a lost record must not fail the segment */
	Py_XDECREF(item);
}

/* Seconds to the nanoseconds of tcb.c's clock, refusing what the clock
 * cannot hold rather than wrapping it: name is the argument, as the
 * caller wrote it. */
static int seconds_to_ns(const char *name, double seconds, uint64_t *ns)
{
	static const double clock_end = 18446744073709551616.0; /* 2**64 ns */
	char text[32];

	/* PyErr_Format has no %g */
	snprintf(text, sizeof(text), "%g", seconds);
	if (isnan(seconds) || seconds < 0) {
		PyErr_Format(PyExc_ValueError,
			     "%s must be a number of seconds >= 0, not %s",
			     name, text);
		return -1;
	}
	if (!(seconds * 1e9 < clock_end)) {
		PyErr_Format(
			PyExc_OverflowError,
			"%s: %s seconds is past the end of the clock (2**64 ns, about 584 years)",
			name, text);
		return -1;
	}
	*ns = (uint64_t)(seconds * 1e9);
	return 0;
}

static PyObject *tcb_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = { "iss", "time_wait", NULL };
	unsigned long long iss = 0;
	double time_wait = 60.0;
	uint64_t time_wait_ns;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|Kd:Tcb", kw, &iss,
					 &time_wait))
		return NULL;
	if (iss > 0xffffffffu)
		return PyErr_Format(PyExc_ValueError,
				    "Tcb: iss must be in 0..2**32-1");
	if (seconds_to_ns("time_wait", time_wait, &time_wait_ns) < 0)
		return NULL;
	TcbObject *self = (TcbObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	self->transitions = PyList_New(0);
	if (!self->transitions) {
		Py_DECREF(self);
		return NULL;
	}
	fp_tcb_init(&self->tcb, (uint32_t)iss, time_wait_ns);
	self->tcb.on_transition = tcb_record;
	self->tcb.on_transition_ctx = self;
	return (PyObject *)self;
}

static int tcb_traverse(TcbObject *self, visitproc visit, void *arg)
{
	Py_VISIT(Py_TYPE(self));
	Py_VISIT(self->transitions);
	return 0;
}

static int tcb_clear(TcbObject *self)
{
	Py_CLEAR(self->transitions);
	return 0;
}

static void tcb_dealloc(TcbObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	tcb_clear(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

/* The segment and its time (ns) from (segment, ts=None): ts defaults to the
 * segment's own stamp, else (never on the wire) 0. */
static SegmentObject *segment_and_time(TcbObject *self, PyObject *args,
				       uint64_t *now)
{
	PyObject *seg, *ts = Py_None;
	if (!PyArg_ParseTuple(args, "O|O", &seg, &ts))
		return NULL;
	core_state *st = core_state_of_type(Py_TYPE(self));
	if (!PyObject_TypeCheck(seg, st->segment_type)) {
		PyErr_Format(PyExc_TypeError, "expected a Segment, not %.100s",
			     Py_TYPE(seg)->tp_name);
		return NULL;
	}
	double when = ts != Py_None ? PyFloat_AsDouble(ts)
				    : ((SegmentObject *)seg)->ts;
	if (PyErr_Occurred())
		return NULL;
	if (ts == Py_None && isnan(when))
		when = 0;
	if (seconds_to_ns("ts", when, now) < 0)
		return NULL;
	return (SegmentObject *)seg;
}

static PyObject *tcb_on_send(TcbObject *self, PyObject *args)
{
	uint64_t now;
	SegmentObject *seg = segment_and_time(self, args, &now);
	if (!seg)
		return NULL;
	struct fp_segment whole;
	segment_unpack(seg, &whole);
	fp_tcb_tick(&self->tcb, now);
	fp_tcb_on_send(&self->tcb, &whole, now);
	Py_RETURN_NONE;
}

static PyObject *tcb_on_segment(TcbObject *self, PyObject *args)
{
	static const char *replies[] = { "", "ACK", "CHALLENGE_ACK", "RST" };
	uint64_t now;
	SegmentObject *seg = segment_and_time(self, args, &now);
	if (!seg)
		return NULL;
	struct fp_segment whole;
	segment_unpack(seg, &whole);
	fp_tcb_tick(&self->tcb, now);
	enum fp_reply reply = fp_tcb_on_segment(&self->tcb, &whole, now);
	return PyUnicode_FromString(replies[reply]);
}

static PyObject *tcb_listen(TcbObject *self, PyObject *args)
{
	double ts = 0;
	uint64_t now;
	if (!PyArg_ParseTuple(args, "|d:listen", &ts) ||
	    seconds_to_ns("ts", ts, &now) < 0)
		return NULL;
	fp_tcb_listen(&self->tcb, now);
	Py_RETURN_NONE;
}

static PyObject *tcb_tick(TcbObject *self, PyObject *args)
{
	double ts;
	uint64_t now;
	if (!PyArg_ParseTuple(args, "d:tick", &ts) ||
	    seconds_to_ns("ts", ts, &now) < 0)
		return NULL;
	fp_tcb_tick(&self->tcb, now);
	Py_RETURN_NONE;
}

static PyObject *get_state(TcbObject *self, void *c)
{
	return PyUnicode_FromString(fp_state_name(self->tcb.state));
}
static PyObject *get_transitions(TcbObject *self, void *c)
{
	return PyList_GetSlice(self->transitions, 0, PY_SSIZE_T_MAX);
}

#define TCB_FIELD(name)                                                        \
	static PyObject *get_##name(TcbObject *self, void *c)                  \
	{                                                                      \
		return PyLong_FromUnsignedLong(self->tcb.name);                \
	}
TCB_FIELD(iss)
TCB_FIELD(irs)
TCB_FIELD(snd_una)
TCB_FIELD(snd_nxt)
TCB_FIELD(rcv_nxt)

static PyGetSetDef tcb_getset[] = {
	{ "state", (getter)get_state, NULL, "the state's RFC 9293 name", NULL },
	{ "transitions", (getter)get_transitions, NULL, "[(ts, from, to, why)]",
	  NULL },
	{ "iss", (getter)get_iss, NULL, "initial send sequence number", NULL },
	{ "irs", (getter)get_irs, NULL, "initial receive sequence number",
	  NULL },
	{ "snd_una", (getter)get_snd_una, NULL,
	  "oldest unacknowledged sequence number", NULL },
	{ "snd_nxt", (getter)get_snd_nxt, NULL, "next sequence number to send",
	  NULL },
	{ "rcv_nxt", (getter)get_rcv_nxt, NULL, "next sequence number expected",
	  NULL },
	{ NULL },
};

static PyMethodDef tcb_methods[] = {
	{ "on_send", (PyCFunction)tcb_on_send, METH_VARARGS,
	  "on_send(segment, ts=None): this endpoint sent segment (OPEN, SEND, CLOSE, ABORT)" },
	{ "on_segment", (PyCFunction)tcb_on_segment, METH_VARARGS,
	  "on_segment(segment, ts=None) -> what RFC 9293 would answer: \"\", \"ACK\", "
	  "\"CHALLENGE_ACK\" or \"RST\" (SEGMENT ARRIVES)" },
	{ "listen", (PyCFunction)tcb_listen, METH_VARARGS,
	  "listen(ts=0): passive OPEN, CLOSED -> LISTEN" },
	{ "tick", (PyCFunction)tcb_tick, METH_VARARGS,
	  "tick(ts): let timers (TIME_WAIT) run to ts" },
	{ NULL },
};

static PyType_Slot tcb_slots[] = {
	{ Py_tp_doc,
	  "Tcb(iss=0, time_wait=60.0): RFC 9293's state machine, fed segments by hand." },
	{ Py_tp_new, tcb_new },
	{ Py_tp_dealloc, tcb_dealloc },
	{ Py_tp_traverse, tcb_traverse },
	{ Py_tp_clear, tcb_clear },
	{ Py_tp_getset, tcb_getset },
	{ Py_tp_methods, tcb_methods },
	{ 0, NULL },
};

PyType_Spec tcb_spec = {
	.name = "finprobe._core.Tcb",
	.basicsize = sizeof(TcbObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
		 Py_TPFLAGS_IMMUTABLETYPE,
	.slots = tcb_slots,
};
