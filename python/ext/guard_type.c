/*
 * guard_type.c: finprobe._core.Guard, guard.c's RST suppression: one
 * nftables rule per 4-tuple in a table of finprobe's own, gone with the
 * last rule, with close(), or with the process.
 *
 * Calls hold the Guard's mutex, as core.h says, and release the GIL: each
 * is a netlink round trip to nf_tables.
 */
#include "core.h"

typedef struct {
	PyObject_HEAD
	struct fp_guard *guard; /* NULL once closed */
	pthread_mutex_t lock;
} GuardObject;

static PyObject *guard_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = { NULL };
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":Guard", kw))
		return NULL;
	GuardObject *self = (GuardObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	pthread_mutex_init(&self->lock, NULL);
	char err[256] = "";
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = fp_guard_new(&self->guard, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (rc == 0)
		return (PyObject *)self;
	Py_DECREF(self);
	core_state *st = core_state_of_type(type);
	return PyErr_Format(rc == -EPERM || rc == -EACCES ? st->permission_error
							  : st->error,
			    "cannot set up RST suppression: %s", err);
}

static void guard_release(GuardObject *self)
{
	core_lock(&self->lock);
	struct fp_guard *g = self->guard;
	self->guard = NULL;
	core_unlock(&self->lock);
	if (g) {
		Py_BEGIN_ALLOW_THREADS
		fp_guard_free(g);
		Py_END_ALLOW_THREADS
	}
}

static void guard_dealloc(GuardObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	guard_release(self);
	pthread_mutex_destroy(&self->lock);
	tp->tp_free(self);
	Py_DECREF(tp);
}

typedef int (*guard_op)(struct fp_guard *, const struct fp_tuple *);

static PyObject *guard_call(GuardObject *self, PyObject *args,
			    const char *fname, guard_op fn)
{
	struct fp_tuple t;
	if (core_tuple_args(args, fname, &t) < 0)
		return NULL;
	core_state *st = core_state_of_type(Py_TYPE(self));
	char err[256] = "the guard is closed";
	int rc;
	Py_BEGIN_ALLOW_THREADS
	pthread_mutex_lock(&self->lock);
	rc = self->guard ? fn(self->guard, &t) : -EBADF;
	if (self->guard && rc)
		snprintf(err, sizeof(err), "%s", fp_guard_error(self->guard));
	pthread_mutex_unlock(&self->lock);
	Py_END_ALLOW_THREADS
	if (rc == 0)
		Py_RETURN_NONE;
	if (rc == -EPERM)
		return PyErr_Format(
			st->permission_error,
			"%s: %s. Run as root, or grant the capability: "
			"sudo setcap cap_net_raw,cap_net_admin+ep <python binary>",
			fname, err);
	return PyErr_Format(st->error, "%s: %s", fname, err);
}

static PyObject *guard_add(GuardObject *self, PyObject *args)
{
	return guard_call(self, args, "add", fp_guard_add);
}

static PyObject *guard_remove(GuardObject *self, PyObject *args)
{
	return guard_call(self, args, "remove", fp_guard_remove);
}

static PyObject *guard_close(GuardObject *self, PyObject *Py_UNUSED(ignored))
{
	guard_release(self);
	Py_RETURN_NONE;
}

static PyObject *get_table(GuardObject *self, void *c)
{
	char name[128] = "";
	core_lock(&self->lock);
	if (self->guard && fp_guard_count(self->guard))
		snprintf(name, sizeof(name), "inet %s",
			 fp_guard_table(self->guard));
	core_unlock(&self->lock);
	if (!name[0])
		Py_RETURN_NONE;
	return PyUnicode_FromString(name);
}

static PyObject *get_rules(GuardObject *self, void *c)
{
	core_lock(&self->lock);
	size_t n = self->guard ? fp_guard_count(self->guard) : 0;
	core_unlock(&self->lock);
	return PyLong_FromSize_t(n);
}

static PyObject *get_closed(GuardObject *self, void *c)
{
	return PyBool_FromLong(!self->guard);
}

static PyGetSetDef guard_getset[] = {
	{ "table", (getter)get_table, NULL,
	  "\"inet finprobe_<pid>_<n>\" while a rule needs it, else None",
	  NULL },
	{ "rules", (getter)get_rules, NULL, "how many 4-tuples have a rule",
	  NULL },
	{ "closed", (getter)get_closed, NULL, "whether close() ran", NULL },
	{ NULL },
};

static PyMethodDef guard_methods[] = {
	{ "add", (PyCFunction)guard_add, METH_VARARGS,
	  "add(local_addr, local_port, remote_addr, remote_port): drop the local kernel's RSTs "
	  "from this 4-tuple" },
	{ "remove", (PyCFunction)guard_remove, METH_VARARGS,
	  "remove(local_addr, local_port, remote_addr, remote_port): remove its rule (the table "
	  "with the last one)" },
	{ "close", (PyCFunction)guard_close, METH_NOARGS,
	  "close(): delete the table, free the context" },
	{ NULL },
};

static PyType_Slot guard_slots[] = {
	{ Py_tp_doc,
	  "Guard(): RST suppression through a table of finprobe's own (needs CAP_NET_ADMIN)" },
	{ Py_tp_new, guard_new },
	{ Py_tp_dealloc, guard_dealloc },
	{ Py_tp_getset, guard_getset },
	{ Py_tp_methods, guard_methods },
	{ 0, NULL },
};

PyType_Spec guard_spec = {
	.name = "finprobe._core.Guard",
	.basicsize = sizeof(GuardObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = guard_slots,
};
