/*
 * args.c: conversions of the caller's arguments that several types share,
 * so that one argument is checked, and its error worded, one way
 * everywhere: ports and 4-tuples.
 */
#include "core.h"

int core_port_arg(const char *name, PyObject *value, uint16_t *port)
{
	if (!PyLong_Check(value) || PyBool_Check(value)) {
		PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s", name,
			     Py_TYPE(value)->tp_name);
		return -1;
	}
	int overflow;
	long v = PyLong_AsLongAndOverflow(value, &overflow);
	if (v == -1 && PyErr_Occurred())
		return -1;
	if (overflow || v < 1 || v > 65535) {
		PyErr_Format(PyExc_ValueError, "%s must be in 1..65535, got %R", name, value);
		return -1;
	}
	*port = (uint16_t)v;
	return 0;
}

int core_tuple_arg(PyObject *local_addr, PyObject *local_port, PyObject *remote_addr,
		   PyObject *remote_port, struct fp_tuple *t)
{
	uint8_t local_family, remote_family;
	memset(t, 0, sizeof(*t));
	if (core_parse_address("local_addr", local_addr, t->local, &local_family) < 0 ||
	    core_port_arg("local_port", local_port, &t->local_port) < 0 ||
	    core_parse_address("remote_addr", remote_addr, t->remote, &remote_family) < 0 ||
	    core_port_arg("remote_port", remote_port, &t->remote_port) < 0)
		return -1;
	if (local_family != remote_family) {
		PyErr_Format(PyExc_ValueError, "local_addr %R and remote_addr %R are not of one IP version",
			     local_addr, remote_addr);
		return -1;
	}
	t->family = local_family;
	return 0;
}

int core_tuple_args(PyObject *args, const char *fname, struct fp_tuple *t)
{
	PyObject *la, *lp, *ra, *rp;
	char format[40];
	snprintf(format, sizeof(format), "OOOO:%s", fname);
	if (!PyArg_ParseTuple(args, format, &la, &lp, &ra, &rp))
		return -1;
	return core_tuple_arg(la, lp, ra, rp, t);
}
