/*
 * listener_type.c: finprobe._core.Listener, SYNs to one address and port
 * that no connection claims; accept() makes a Connection of the oldest.
 */
#include "engine.h"

static void listener_dealloc(ListenerObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	PyObject_GC_UnTrack(self);
	if (self->listener) { /* core_lock ends: see connection_release */
		core_lock(&self->engine->lock);
		if (self->engine->engine) /* else freed with its engine */
			fp_listener_free(self->listener);
		core_unlock(&self->engine->lock);
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
static PyObject *listener_accept(ListenerObject *self, PyObject *args,
				 PyObject *kwargs)
{
	static char *kw[] = { "timeout", "iss", "time_wait", "cls", NULL };
	PyObject *timeout_arg, *iss_arg, *time_wait_arg, *cls = NULL;
	unsigned long long iss;
	uint64_t timeout, time_wait;
	PyTypeObject *type;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|O:accept", kw,
					 &timeout_arg, &iss_arg, &time_wait_arg,
					 &cls) ||
	    core_seconds_arg("timeout", timeout_arg, &timeout) < 0 ||
	    core_unsigned_arg(iss_arg, "iss", 0xffffffffu, &iss) < 0 ||
	    core_seconds_arg("time_wait", time_wait_arg, &time_wait) < 0 ||
	    connection_class_arg(self->engine, cls, &type) < 0)
		return NULL;
	uint64_t deadline = fp_now_ns() + timeout;
	for (int more = 1;;) {
		if (engine_lock(self->engine) < 0)
			return NULL;
		struct fp_conn *conn;
		int err = -fp_listener_accept(&conn, self->listener,
					      (uint32_t)iss, time_wait);
		engine_unlock(self->engine);
		if (!err)
			return connection_wrap(self->engine, type, conn);
		if (err == EADDRINUSE)
			return PyErr_Format(
				PyExc_ValueError,
				"a connection for the waiting SYN's 4-tuple is already open");
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
	{ "accept", (PyCFunction)(void (*)(void))listener_accept,
	  METH_VARARGS | METH_KEYWORDS,
	  "accept(timeout, iss, time_wait, cls=None) -> Connection in LISTEN with the SYN waiting, or None"
	  "\n\ntimeout, time_wait: seconds, >= 0 and at most threading.TIMEOUT_MAX." },
	{ NULL },
};

static PyType_Slot listener_slots[] = {
	{ Py_tp_doc,
	  "SYNs to one address and port that no connection claims." },
	{ Py_tp_dealloc, listener_dealloc },
	{ Py_tp_traverse, listener_traverse },
	{ Py_tp_methods, listener_methods },
	{ 0, NULL },
};

PyType_Spec listener_spec = {
	.name = "finprobe._core.Listener",
	.basicsize = sizeof(ListenerObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
		 Py_TPFLAGS_IMMUTABLETYPE,
	.slots = listener_slots,
};
