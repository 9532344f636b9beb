/*
 * lab_type.c: finprobe._core.Lab, the namespaces, veth and helper process
 * of lab.c, and the kernel's sockets read through diag.c.
 *
 * The pure-Python fp.Lab composes it with an Engine on packet_fd; this type
 * only owns descriptors and answers questions about the kernel's side.
 */
#include "core.h"

#include <sched.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <unistd.h>

typedef struct {
	PyObject_HEAD
	struct fp_lab *lab; /* NULL once closed */
	int diag_fd;
} LabObject;

static PyObject *lab_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = {NULL};
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":Lab", kw))
		return NULL;
	LabObject *self = (LabObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	self->diag_fd = -1;
	char err[256] = "";
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = fp_lab_open(&self->lab, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (rc == 0)
		return (PyObject *)self;
	Py_DECREF(self);
	core_state *st = core_state_of_type(type);
	if (rc == -EPERM || rc == -EACCES)
		return PyErr_Format(st->permission_error,
				    "cannot make a lab: %s. A lab needs root, or unprivileged user "
				    "namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
				    "user.max_user_namespaces > 0)", err);
	return PyErr_Format(st->error, "cannot make a lab: %s (%s)", err, strerror(-rc));
}

static void lab_release(LabObject *self)
{
	if (self->diag_fd >= 0)
		close(self->diag_fd);
	self->diag_fd = -1;
	if (self->lab) {
		struct fp_lab *lab = self->lab;
		self->lab = NULL;
		Py_BEGIN_ALLOW_THREADS
		fp_lab_close(lab);
		Py_END_ALLOW_THREADS
	}
}

static void lab_dealloc(LabObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	lab_release(self);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static int lab_open(LabObject *self)
{
	if (self->lab)
		return 0;
	PyErr_SetString(core_state_of_type(Py_TYPE(self))->error, "the lab is closed");
	return -1;
}

static PyObject *lab_close(LabObject *self, PyObject *Py_UNUSED(ignored))
{
	lab_release(self);
	Py_RETURN_NONE;
}

static PyObject *lab_socket(LabObject *self, PyObject *args)
{
	int family, type, protocol = 0;
	if (!PyArg_ParseTuple(args, "ii|i:socket", &family, &type, &protocol) || lab_open(self) < 0)
		return NULL;
	int fd = fp_lab_socket(self->lab, family, type | SOCK_CLOEXEC, protocol);
	if (fd < 0) {
		errno = -fd;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	return PyLong_FromLong(fd);
}

static PyObject *lab_sysctl(LabObject *self, PyObject *args)
{
	const char *name;
	PyObject *value = Py_None;
	if (!PyArg_ParseTuple(args, "s|O:sysctl", &name, &value) || lab_open(self) < 0)
		return NULL;
	PyObject *text = value == Py_None ? NULL : PyObject_Str(value);
	if (value != Py_None && !text)
		return NULL;
	char out[4096] = "";
	int rc = fp_lab_sysctl(self->lab, name, text ? PyUnicode_AsUTF8(text) : NULL, out, sizeof(out));
	Py_XDECREF(text);
	if (rc == -ENOENT)
		return PyErr_Format(PyExc_ValueError, "sysctl: no such setting %R in the lab", PyTuple_GET_ITEM(args, 0));
	if (rc == -EINVAL)
		return PyErr_Format(PyExc_ValueError,
				    "sysctl: %R is not a net.* setting: only those belong to the lab's namespace",
				    PyTuple_GET_ITEM(args, 0));
	if (rc < 0)
		return PyErr_Format(PyExc_OSError, "sysctl %s: %s", name, strerror(-rc));
	if (value != Py_None)
		Py_RETURN_NONE;
	return PyUnicode_FromString(out);
}

static const char *timer_name(enum fp_diag_timer t)
{
	static const char *names[] = {NULL, "retrans", "keepalive", "timewait", "persist"};
	return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : NULL;
}

static PyObject *info_dict(const struct fp_diag_info *info)
{
	const char *timer = timer_name(info->timer);
	PyObject *d = Py_BuildValue(
		"{sssNsdsIsIsI}", "state", fp_state_name(info->state), "timer",
		timer ? PyUnicode_FromString(timer) : Py_NewRef(Py_None), "expires",
		info->timer ? info->expires_ms / 1000.0 : 0.0, "retransmits", info->retransmits,
		"rqueue", info->rqueue, "wqueue", info->wqueue);
	if (d && info->has_tcp_info) {
		PyObject *more = Py_BuildValue("{sisdsIsI}", "backoff", info->backoff, "rto",
					       info->rto_us / 1e6, "total_retrans", info->total_retrans,
					       "snd_cwnd", info->snd_cwnd);
		if (!more || PyDict_Update(d, more) < 0)
			Py_CLEAR(d);
		Py_XDECREF(more);
	}
	if (d && info->timer == FP_TIMER_NONE && PyDict_SetItemString(d, "expires", Py_None) < 0)
		Py_CLEAR(d);
	return d;
}

/* diag(local_addr, local_port, remote_addr, remote_port) -> dict or None,
 * the tuple seen from the kernel. */
static PyObject *lab_diag(LabObject *self, PyObject *args)
{
	PyObject *la, *ra;
	int lp, rp;
	uint8_t laddr[16], raddr[16], lf, rf;
	if (!PyArg_ParseTuple(args, "OiOi:diag", &la, &lp, &ra, &rp) || lab_open(self) < 0 ||
	    core_parse_address("local_addr", la, laddr, &lf) < 0 ||
	    core_parse_address("remote_addr", ra, raddr, &rf) < 0)
		return NULL;
	if (self->diag_fd < 0) {
		self->diag_fd = fp_lab_socket(self->lab, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
		if (self->diag_fd < 0) {
			errno = -self->diag_fd;
			self->diag_fd = -1;
			return PyErr_SetFromErrno(PyExc_OSError);
		}
	}
	struct fp_diag_info info;
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = fp_diag_lookup(self->diag_fd, lf == 4 ? AF_INET : AF_INET6, laddr, (uint16_t)lp, raddr, (uint16_t)rp, &info);
	Py_END_ALLOW_THREADS
	if (rc == -ENOENT)
		Py_RETURN_NONE;
	if (rc < 0) {
		errno = -rc;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	return info_dict(&info);
}

/*
 * _enter(): for a child between fork and exec (Popen's preexec_fn): the
 * helper kills it when the lab ends, then it joins the lab's namespaces.
 * Only system calls (fp_lab_enter): nothing here may take a lock another
 * thread held at fork.
 */
static PyObject *lab_enter(LabObject *self, PyObject *Py_UNUSED(ignored))
{
	if (lab_open(self) < 0)
		return NULL;
	int rc = fp_lab_enter(self->lab);
	if (rc < 0) {
		errno = -rc;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	Py_RETURN_NONE;
}

static PyObject *get_packet_fd(LabObject *self, void *c)
{
	return lab_open(self) < 0 ? NULL : PyLong_FromLong(fp_lab_packet_fd(self->lab));
}
static PyObject *get_netns_fd(LabObject *self, void *c)
{
	return lab_open(self) < 0 ? NULL : PyLong_FromLong(fp_lab_netns_fd(self->lab));
}
static PyObject *get_userns_fd(LabObject *self, void *c)
{
	return lab_open(self) < 0 ? NULL : PyLong_FromLong(fp_lab_userns_fd(self->lab));
}
static PyObject *get_closed(LabObject *self, void *c) { return PyBool_FromLong(!self->lab); }

static PyObject *get_macs(LabObject *self, void *c)
{
	static const uint8_t peer[6] = FP_LAB_PEER_MAC, local[6] = FP_LAB_LOCAL_MAC;
	return Py_BuildValue("(y#y#)", (const char *)local, (Py_ssize_t)6, (const char *)peer, (Py_ssize_t)6);
}

static PyGetSetDef lab_getset[] = {
	{"packet_fd", (getter)get_packet_fd, NULL, "AF_PACKET socket on finprobe's end", NULL},
	{"netns_fd", (getter)get_netns_fd, NULL, "the kernel's network namespace", NULL},
	{"userns_fd", (getter)get_userns_fd, NULL, "the lab's user namespace, or -1 (root)", NULL},
	{"macs", (getter)get_macs, NULL, "(finprobe's MAC, the kernel's MAC)", NULL},
	{"closed", (getter)get_closed, NULL, "whether close() ended the lab", NULL},
	{NULL},
};

static PyMethodDef lab_methods[] = {
	{"close", (PyCFunction)lab_close, METH_NOARGS, "end the helper: namespaces and veth go"},
	{"socket", (PyCFunction)lab_socket, METH_VARARGS,
	 "socket(family, type, protocol=0) -> fd made in the kernel's namespace"},
	{"sysctl", (PyCFunction)lab_sysctl, METH_VARARGS, "sysctl(name, value=None) -> str or None"},
	{"diag", (PyCFunction)lab_diag, METH_VARARGS,
	 "diag(local_addr, local_port, remote_addr, remote_port) -> dict of the kernel's socket, or None"},
	{"_enter", (PyCFunction)lab_enter, METH_NOARGS,
	 "_enter(): in a forked child before exec, end with the lab and join its namespaces"},
	{NULL},
};

static PyType_Slot lab_slots[] = {
	{Py_tp_doc, "Lab(): two network namespaces joined by veth, a kernel peer in one."},
	{Py_tp_new, lab_new},
	{Py_tp_dealloc, lab_dealloc},
	{Py_tp_getset, lab_getset},
	{Py_tp_methods, lab_methods},
	{0, NULL},
};

PyType_Spec lab_spec = {
	.name = "finprobe._core.Lab",
	.basicsize = sizeof(LabObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = lab_slots,
};
