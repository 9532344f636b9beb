/*
 * module.c: finprobe._core, the CPython extension over libfinprobe.
 *
 * Multi-phase init (PEP 489): core_exec creates the exceptions and the heap
 * types into the module state; nothing lives in C globals. One file a type:
 * segment_type.c, lab_type.c, engine_type.c (the link), connection_type.c
 * and listener_type.c (these three share engine.h), tcb_type.c, guard_type.c.
 */
#include "core.h"

static int add_exception(PyObject *module, PyObject **slot, const char *name,
			 PyObject *bases, const char *doc)
{
	char qualified[64];
	snprintf(qualified, sizeof(qualified), "finprobe.%s", name);
	*slot = PyErr_NewExceptionWithDoc(qualified, doc, bases, NULL);
	Py_XDECREF(bases);
	if (!*slot)
		return -1;
	return PyModule_AddObjectRef(module, name, *slot);
}

static int add_exceptions(PyObject *m, core_state *st)
{
	if (add_exception(m, &st->error, "Error", NULL,
			  "Base of every finprobe error.") < 0)
		return -1;
	return add_exception(
		       m, &st->parse_error, "ParseError",
		       PyTuple_Pack(2, st->error, PyExc_ValueError),
		       "A malformed packet: the message says what is wrong.") ||
	       add_exception(
		       m, &st->expect_error, "ExpectError",
		       PyTuple_Pack(2, st->error, PyExc_AssertionError),
		       "A failed expectation: expected against got, and the recent trace.") ||
	       add_exception(
		       m, &st->permission_error, "PermissionError",
		       PyTuple_Pack(2, st->error, PyExc_PermissionError),
		       "A missing privilege: the message says which and how to grant it.") ||
	       add_exception(m, &st->connection_refused, "ConnectionRefused",
			     PyTuple_Pack(2, st->error,
					  PyExc_ConnectionRefusedError),
			     "A handshake answered by RST.");
}

static int add_type(PyObject *m, PyTypeObject **slot, PyType_Spec *spec,
		    PyObject *base)
{
	*slot = (PyTypeObject *)PyType_FromModuleAndSpec(m, spec, base);
	if (!*slot)
		return -1;
	return PyModule_AddType(m, *slot);
}

static int core_exec(PyObject *m)
{
	core_state *st = PyModule_GetState(m);
	if (add_exceptions(m, st) < 0 ||
	    PyModule_AddFunctions(m, pcap_functions) < 0)
		return -1;
	return add_type(m, &st->segment_type, &segment_spec, NULL) ||
	       add_type(m, &st->lab_type, &lab_spec, NULL) ||
	       add_type(m, &st->engine_type, &engine_spec, NULL) ||
	       add_type(m, &st->connection_type, &connection_spec, NULL) ||
	       add_type(m, &st->listener_type, &listener_spec, NULL) ||
	       add_type(m, &st->tcb_type, &tcb_spec, NULL) ||
	       add_type(m, &st->guard_type, &guard_spec, NULL);
}

static int core_traverse(PyObject *m, visitproc visit, void *arg)
{
	core_state *st = PyModule_GetState(m);
	Py_VISIT(st->segment_type);
	Py_VISIT(st->lab_type);
	Py_VISIT(st->engine_type);
	Py_VISIT(st->connection_type);
	Py_VISIT(st->listener_type);
	Py_VISIT(st->tcb_type);
	Py_VISIT(st->guard_type);
	Py_VISIT(st->error);
	Py_VISIT(st->parse_error);
	Py_VISIT(st->expect_error);
	Py_VISIT(st->permission_error);
	Py_VISIT(st->connection_refused);
	return 0;
}

static int core_clear(PyObject *m)
{
	core_state *st = PyModule_GetState(m);
	Py_CLEAR(st->segment_type);
	Py_CLEAR(st->lab_type);
	Py_CLEAR(st->engine_type);
	Py_CLEAR(st->connection_type);
	Py_CLEAR(st->listener_type);
	Py_CLEAR(st->tcb_type);
	Py_CLEAR(st->guard_type);
	Py_CLEAR(st->error);
	Py_CLEAR(st->parse_error);
	Py_CLEAR(st->expect_error);
	Py_CLEAR(st->permission_error);
	Py_CLEAR(st->connection_refused);
	return 0;
}

static void core_free(void *m)
{
	core_clear((PyObject *)m);
}

core_state *core_state_of_type(PyTypeObject *type)
{
	PyObject *m = PyType_GetModuleByDef(type, &core_module);
	return m ? PyModule_GetState(m) : NULL;
}

static PyModuleDef_Slot core_slots[] = {
	{ Py_mod_exec, core_exec },
	{ 0, NULL },
};

PyModuleDef core_module = {
	PyModuleDef_HEAD_INIT,
	.m_name = "finprobe._core",
	.m_doc =
		"The C core of finprobe: segments, the lab, links and connections.",
	.m_size = sizeof(core_state),
	.m_slots = core_slots,
	.m_traverse = core_traverse,
	.m_clear = core_clear,
	.m_free = core_free,
};

PyMODINIT_FUNC PyInit__core(void)
{
	return PyModuleDef_Init(&core_module);
}
