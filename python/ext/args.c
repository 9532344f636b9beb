/*
 * args.c: conversions of the caller's arguments that several types share,
 * so that one argument is checked, and its error worded, one way
 * everywhere: unsigned ints, ports, 4-tuples and seconds.
 */
#include "core.h"

#include <math.h>

int core_unsigned_check(PyObject *value, unsigned long long max,
			unsigned long long *out)
{
	if (!PyLong_Check(value) || PyBool_Check(value))
		return CORE_NUM_TYPE;
	int overflow;
	long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
	if (v == -1 && PyErr_Occurred())
		return CORE_NUM_ERROR;
	if (overflow || v < 0 || (unsigned long long)v > max)
		return CORE_NUM_RANGE;
	*out = (unsigned long long)v;
	return CORE_NUM_OK;
}

int core_unsigned_arg(PyObject *value, const char *name, unsigned long long max,
		      unsigned long long *out)
{
	switch (core_unsigned_check(value, max, out)) {
	case CORE_NUM_OK:
		return 0;
	case CORE_NUM_TYPE:
		PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s",
			     name, Py_TYPE(value)->tp_name);
		return -1;
	case CORE_NUM_RANGE:
		PyErr_Format(PyExc_ValueError, "%s must be in 0..%llu, got %R",
			     name, max, value);
		return -1;
	}
	return -1;
}

int core_port_arg(const char *name, PyObject *value, uint16_t *port)
{
	if (!PyLong_Check(value) || PyBool_Check(value)) {
		PyErr_Format(PyExc_TypeError, "%s must be an int, not %.100s",
			     name, Py_TYPE(value)->tp_name);
		return -1;
	}
	int overflow;
	long v = PyLong_AsLongAndOverflow(value, &overflow);
	if (v == -1 && PyErr_Occurred())
		return -1;
	if (overflow || v < 1 || v > 65535) {
		PyErr_Format(PyExc_ValueError, "%s must be in 1..65535, got %R",
			     name, value);
		return -1;
	}
	*port = (uint16_t)v;
	return 0;
}

int core_tuple_arg(PyObject *local_addr, PyObject *local_port,
		   PyObject *remote_addr, PyObject *remote_port,
		   struct fp_tuple *t)
{
	uint8_t local_family, remote_family;
	memset(t, 0, sizeof(*t));
	if (core_parse_address("local_addr", local_addr, t->local,
			       &local_family) < 0 ||
	    core_port_arg("local_port", local_port, &t->local_port) < 0 ||
	    core_parse_address("remote_addr", remote_addr, t->remote,
			       &remote_family) < 0 ||
	    core_port_arg("remote_port", remote_port, &t->remote_port) < 0)
		return -1;
	if (local_family != remote_family) {
		PyErr_Format(
			PyExc_ValueError,
			"local_addr %R and remote_addr %R are not of one IP version",
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

int core_seconds_arg(const char *name, PyObject *value, uint64_t *ns)
{
	double s;
	if (PyFloat_Check(value)) {
		s = PyFloat_AS_DOUBLE(value);
	} else if (PyLong_Check(value) && !PyBool_Check(value)) {
		int overflow;
		long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
		if (v == -1 && PyErr_Occurred())
			return -1;
		s = overflow ? overflow * INFINITY : (double)v;
	} else {
		PyErr_Format(PyExc_TypeError,
			     "%s must be a number of seconds, not %.100s", name,
			     Py_TYPE(value)->tp_name);
		return -1;
	}
	if (isnan(s) || s < 0) {
		PyErr_Format(PyExc_ValueError,
			     "%s must be a number of seconds >= 0, got %R",
			     name, value);
		return -1;
	}
	if (s > CORE_SECONDS_MAX) {
		PyErr_Format(PyExc_OverflowError,
			     "%s must be at most " CORE_SECONDS_MAX_TEXT
			     " seconds (threading.TIMEOUT_MAX), "
			     "got %R",
			     name, value);
		return -1;
	}
	*ns = (uint64_t)llround(s * 1e9);
	return 0;
}
