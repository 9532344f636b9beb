/*
 * lab_type.c: finprobe._core.Lab, the namespaces, veth (or a stack lab's
 * TAP) and helper process of lab.c, and the kernel's sockets read through
 * diag.c.
 *
 * The pure-Python fp.Lab composes it with an Engine on packet_fd; this type
 * only owns descriptors and answers questions about the kernel's side.
 *
 * Threads may share a Lab: every call that talks to the helper or to
 * sock_diag takes the object's lock (lab_lock, the _bz2module.c way), runs
 * with the GIL released, and waits boundedly (lab.c's and diag.c's
 * timeouts). A signal that interrupts such a wait is handed to Python
 * (PyErr_CheckSignals), so Ctrl-C gets through; if its handler raises
 * nothing, the call is made again. No Python object is made or freed under
 * the lock.
 */
#include "core.h"
#include "engine.h"

#include <sched.h>
#include <sys/socket.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <unistd.h>

#define LOCK_SLICE_US 50000	    /* then look for signals again */
#define LOCK_WAIT_NS 60000000000ULL /* beyond every holder's own bound */

typedef struct {
	PyObject_HEAD
	struct fp_lab *lab; /* NULL once closed */
	/* NETLINK_SOCK_DIAG in the lab, made on first use */
	int diag_fd;
	PyThread_type_lock lock; /* held by the thread talking to the helper */
	int stack;		 /* a stack lab: a TAP for a user-space stack */
	unsigned port_at; /* the next source port in turn (open_picked) */
} LabObject;

static PyObject *closed_error(LabObject *self)
{
	PyErr_SetString(core_state_of_type(Py_TYPE(self))->error,
			"the lab is closed");
	return NULL;
}

/* Take self->lock: at once if free, else with the GIL released, in slices
 * between which pending signals run (Ctrl-C raises here). Returns 0, or -1
 * with an exception. */
static int lab_lock(LabObject *self)
{
	uint64_t deadline = fp_now_ns() + LOCK_WAIT_NS;
	PyLockStatus got;

	if (PyThread_acquire_lock(self->lock, NOWAIT_LOCK))
		return 0;
	for (;;) {
		Py_BEGIN_ALLOW_THREADS
		got = PyThread_acquire_lock_timed(self->lock, LOCK_SLICE_US, 1);
		Py_END_ALLOW_THREADS
		if (got == PY_LOCK_ACQUIRED)
			return 0;
		if (PyErr_CheckSignals() < 0)
			return -1;
		if (fp_now_ns() >= deadline) {
			PyErr_SetString(
				core_state_of_type(Py_TYPE(self))->error,
				"the lab is busy: another thread's call did not end within 60 s");
			return -1;
		}
	}
}

/* A call to lab.c or diag.c, run by locked_call. */
typedef int (*lab_call_fn)(LabObject *self, void *arg);

/* call(self, arg) under the lock with the GIL released. Returns 0 with its
 * result in *rc, or -1 with an exception (the lab closed, a signal's). */
static int locked_call(LabObject *self, lab_call_fn call, void *arg, int *rc)
{
	for (;;) {
		if (lab_lock(self) < 0)
			return -1;
		if (!self->lab) {
			PyThread_release_lock(self->lock);
			closed_error(self);
			return -1;
		}
		Py_BEGIN_ALLOW_THREADS
		*rc = call(self, arg);
		PyThread_release_lock(self->lock);
		Py_END_ALLOW_THREADS
		if (*rc != -EINTR)
			return 0;
		if (PyErr_CheckSignals() < 0)
			return -1;
	}
}

static PyObject *lab_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
	static char *kw[] = { "stack", NULL };
	int stack = 0;
	if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|$p:Lab", kw, &stack))
		return NULL;
	LabObject *self = (LabObject *)type->tp_alloc(type, 0);
	if (!self)
		return NULL;
	self->diag_fd = -1;
	self->stack = stack;
	self->lock = PyThread_allocate_lock();
	if (!self->lock) {
		Py_DECREF(self);
		return PyErr_NoMemory();
	}
	char err[256] = "";
	int rc;
	Py_BEGIN_ALLOW_THREADS
	rc = stack ? fp_lab_open_stack(&self->lab, err, sizeof(err))
		   : fp_lab_open(&self->lab, err, sizeof(err));
	Py_END_ALLOW_THREADS
	if (rc == 0)
		return (PyObject *)self;
	Py_DECREF(self);
	core_state *st = core_state_of_type(type);
	if (rc == -EPERM || rc == -EACCES)
		return PyErr_Format(
			st->permission_error,
			"cannot make a lab: %s. A lab needs root, or unprivileged user "
			"namespaces (sysctl kernel.unprivileged_userns_clone=1 and "
			"user.max_user_namespaces > 0)%s",
			err,
			stack ? "; a stack lab also needs read-write access to "
				"/dev/net/tun (mode 0666, as distributions ship it)"
			      : "");
	return PyErr_Format(st->error, "cannot make a lab: %s (%s)", err,
			    strerror(-rc));
}

/* Close everything with the GIL released; the caller holds the lock, or
 * is the last owner (dealloc). */
static void lab_release(LabObject *self)
{
	struct fp_lab *lab = self->lab;
	int diag_fd = self->diag_fd;

	self->lab = NULL;
	self->diag_fd = -1;
	Py_BEGIN_ALLOW_THREADS
	if (diag_fd >= 0)
		close(diag_fd);
	fp_lab_close(lab);
	Py_END_ALLOW_THREADS
}

static void lab_dealloc(LabObject *self)
{
	PyTypeObject *tp = Py_TYPE(self);
	lab_release(self); /* no other thread holds a reference, nor the lock */
	if (self->lock)
		PyThread_free_lock(self->lock);
	tp->tp_free(self);
	Py_DECREF(tp);
}

static int lab_open(LabObject *self)
{
	if (self->lab)
		return 0;
	closed_error(self);
	return -1;
}

/* Waits for a call of another thread to end first. */
static PyObject *lab_close(LabObject *self, PyObject *Py_UNUSED(ignored))
{
	if (lab_lock(self) < 0)
		return NULL;
	lab_release(self);
	PyThread_release_lock(self->lock);
	Py_RETURN_NONE;
}

/* ---- socket ---------------------------------------------------------------- */

struct socket_call {
	int family, type, protocol;
};

static int call_socket(LabObject *self, void *arg)
{
	struct socket_call *c = arg;
	return fp_lab_socket(self->lab, c->family, c->type | SOCK_CLOEXEC,
			     c->protocol);
}

/* An empty socket.socket (no descriptor yet), made as socket.socket's own
 * __init__ would be, but without running any Python code. */
static PyObject *empty_socket(PyTypeObject **base)
{
	PyObject *module = PyImport_ImportModule("socket");
	PyObject *cls = module ? PyObject_GetAttrString(module, "socket")
			       : NULL;
	PyObject *sock = NULL, *empty = NULL;

	Py_XDECREF(module);
	if (cls && (!PyType_Check(cls) || !((PyTypeObject *)cls)->tp_base ||
		    !((PyTypeObject *)cls)->tp_base->tp_init))
		PyErr_SetString(PyExc_TypeError,
				"socket.socket is not the standard library's");
	else if (cls && (empty = PyTuple_New(0)))
		sock = ((PyTypeObject *)cls)
			       ->tp_new((PyTypeObject *)cls, empty, NULL);
	Py_XDECREF(empty);
	PyObject *zero = sock ? PyLong_FromLong(0) : NULL;
	if (sock &&
	    (!zero || PyObject_SetAttrString(sock, "_io_refs", zero) < 0 ||
	     PyObject_SetAttrString(sock, "_closed", Py_False) < 0))
		Py_CLEAR(sock);
	Py_XDECREF(zero);
	if (sock)
		*base = ((PyTypeObject *)cls)->tp_base;
	Py_XDECREF(cls);
	return sock;
}

/* Give fd to sock (_socket.socket.__init__, C only). On failure fd is
 * closed unless sock took it: it is owned the whole time. */
static int adopt_fd(PyObject *sock, PyTypeObject *base,
		    const struct socket_call *c, int fd)
{
	PyObject *args =
		Py_BuildValue("(iiii)", c->family, c->type, c->protocol, fd);
	int rc = args ? base->tp_init(sock, args, NULL) : -1;

	Py_XDECREF(args);
	if (rc == 0)
		return 0;
	PyObject *type, *value, *tb;
	PyErr_Fetch(&type, &value, &tb);
	PyObject *held = PyObject_CallMethod(sock, "fileno", NULL);
	if (!held || PyLong_AsLong(held) != fd)
		close(fd);
	Py_XDECREF(held);
	PyErr_Clear();
	PyErr_Restore(type, value, tb);
	return -1;
}

/* socket(family, type, protocol=0) -> socket.socket made in the kernel's
 * namespace. The object exists before the descriptor does, and takes it
 * before any Python code can run (and raise KeyboardInterrupt). */
static PyObject *lab_socket(LabObject *self, PyObject *args)
{
	struct socket_call c = { .protocol = 0 };
	PyTypeObject *base = NULL;
	int fd;

	if (!PyArg_ParseTuple(args, "ii|i:socket", &c.family, &c.type,
			      &c.protocol) ||
	    lab_open(self) < 0)
		return NULL;
	PyObject *sock = empty_socket(&base);
	if (!sock)
		return NULL;
	if (locked_call(self, call_socket, &c, &fd) < 0) {
		Py_DECREF(sock);
		return NULL;
	}
	if (fd < 0) {
		Py_DECREF(sock);
		errno = -fd;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	if (adopt_fd(sock, base, &c, fd) < 0) {
		Py_DECREF(sock);
		return NULL;
	}
	return sock;
}

/* ---- sysctl ---------------------------------------------------------------- */

struct sysctl_call {
	const char *name, *value; /* UTF-8 of str objects the caller holds */
	char out[4096];
};

static int call_sysctl(LabObject *self, void *arg)
{
	struct sysctl_call *c = arg;
	return fp_lab_sysctl(self->lab, c->name, c->value, c->out,
			     sizeof(c->out));
}

/* The UTF-8 of text, or NULL with ValueError naming what if it holds a NUL
 * (C would stop there: "9\0" "12" would write 9). */
static const char *text_without_nul(const char *what, PyObject *text)
{
	Py_ssize_t len;
	const char *utf8 = PyUnicode_AsUTF8AndSize(text, &len);

	if (utf8 && (Py_ssize_t)strlen(utf8) != len) {
		PyErr_Format(PyExc_ValueError,
			     "sysctl: the %s %R holds a NUL character", what,
			     text);
		return NULL;
	}
	return utf8;
}

/* fp_lab_sysctl's codes (finprobe.h) as the exceptions the API promises. */
static PyObject *sysctl_error(int rc, PyObject *name, PyObject *value)
{
	switch (rc) {
	case -ENOENT:
		return PyErr_Format(PyExc_ValueError,
				    "sysctl: no such setting %R in the lab",
				    name);
	case -EISDIR:
		return PyErr_Format(
			PyExc_ValueError,
			"sysctl: %R is a group of settings, not one", name);
	case -EDOM:
		return PyErr_Format(
			PyExc_ValueError,
			"sysctl: %R is not a net.* setting: only those belong to the lab's namespace",
			name);
	case -ENAMETOOLONG:
		return PyErr_Format(PyExc_ValueError,
				    "sysctl: the name %R is too long", name);
	case -E2BIG:
		return PyErr_Format(PyExc_ValueError,
				    "sysctl: the value %R for %R is too long",
				    value, name);
	case -EINVAL:
		if (value)
			return PyErr_Format(
				PyExc_ValueError,
				"sysctl: the kernel refused the value %R for %R (EINVAL)",
				value, name);
		break;
	}
	PyObject *text =
		PyUnicode_FromFormat("sysctl %U: %s", name, strerror(-rc));
	if (text) {
		PyObject *exc =
			PyObject_CallFunction(PyExc_OSError, "iO", -rc, text);
		if (exc) {
			PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
			Py_DECREF(exc);
		}
		Py_DECREF(text);
	}
	return NULL;
}

/* sysctl(name, value=None) -> str (read) or None (written; value str or int). */
static PyObject *lab_sysctl(LabObject *self, PyObject *args)
{
	PyObject *name, *value = Py_None, *text = NULL, *result = NULL;
	struct sysctl_call c = { .value = NULL };
	int rc;

	if (!PyArg_ParseTuple(args, "U|O:sysctl", &name, &value) ||
	    lab_open(self) < 0)
		return NULL;
	if (value != Py_None && !(text = PyObject_Str(value)))
		return NULL;
	c.name = text_without_nul("name", name);
	if (c.name && text)
		c.value = text_without_nul("value", text);
	if (c.name && (!text || c.value) &&
	    locked_call(self, call_sysctl, &c, &rc) == 0) {
		if (rc < 0)
			sysctl_error(rc, name, text);
		else if (text)
			result = Py_NewRef(Py_None);
		else
			result = PyUnicode_FromString(c.out);
	}
	Py_XDECREF(text);
	return result;
}

/* ---- diag ------------------------------------------------------------------ */

static const char *timer_name(enum fp_diag_timer t)
{
	static const char *names[] = { NULL, "retrans", "keepalive", "timewait",
				       "persist" };
	return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : NULL;
}

static PyObject *info_dict(const struct fp_diag_info *info)
{
	const char *timer = timer_name(info->timer);
	PyObject *d = Py_BuildValue(
		"{sssNsdsIsIsI}", "state", fp_state_name(info->state), "timer",
		timer ? PyUnicode_FromString(timer) : Py_NewRef(Py_None),
		"expires", info->timer ? info->expires_ms / 1000.0 : 0.0,
		"retransmits", info->retransmits, "rqueue", info->rqueue,
		"wqueue", info->wqueue);
	if (d && info->has_tcp_info) {
		PyObject *more = Py_BuildValue(
			"{sisdsIsI}", "backoff", info->backoff, "rto",
			info->rto_us / 1e6, "total_retrans",
			info->total_retrans, "snd_cwnd", info->snd_cwnd);
		if (!more || PyDict_Update(d, more) < 0)
			Py_CLEAR(d);
		Py_XDECREF(more);
	}
	if (d && info->timer == FP_TIMER_NONE &&
	    PyDict_SetItemString(d, "expires", Py_None) < 0)
		Py_CLEAR(d);
	return d;
}

struct diag_call {
	int family;
	uint8_t laddr[16], raddr[16];
	uint16_t lport, rport;
	int want_info; /* else only whether the socket exists */
	struct fp_diag_info info;
};

/* The sock_diag socket is made on first use, under the lock like its use:
 * one thread's request and answer never meet another's. */
static int call_diag(LabObject *self, void *arg)
{
	struct diag_call *c = arg;

	if (self->diag_fd < 0) {
		int fd = fp_lab_socket(self->lab, AF_NETLINK,
				       SOCK_RAW | SOCK_CLOEXEC,
				       NETLINK_SOCK_DIAG);
		if (fd < 0)
			return fd;
		self->diag_fd = fd;
	}
	return fp_diag_lookup(self->diag_fd, c->family, c->laddr, c->lport,
			      c->raddr, c->rport,
			      c->want_info ? &c->info : NULL);
}

/* diag(local_addr, local_port, remote_addr, remote_port) -> dict or None,
 * the tuple seen from the kernel. */
static PyObject *lab_diag(LabObject *self, PyObject *args)
{
	struct fp_tuple t;
	struct diag_call c;
	int rc;

	if (core_tuple_args(args, "diag", &t) < 0 || lab_open(self) < 0)
		return NULL;
	memcpy(c.laddr, t.local, sizeof(c.laddr));
	memcpy(c.raddr, t.remote, sizeof(c.raddr));
	c.family = t.family == 4 ? AF_INET : AF_INET6;
	c.want_info = 1;
	c.lport = t.local_port;
	c.rport = t.remote_port;
	if (locked_call(self, call_diag, &c, &rc) < 0)
		return NULL;
	if (rc == -ENOENT)
		Py_RETURN_NONE;
	if (rc < 0) {
		errno = -rc;
		return PyErr_SetFromErrno(PyExc_OSError);
	}
	return info_dict(&c.info);
}

/* Whether engine has a connection for t: 1, 0, or -1 with fp.Error (the
 * engine closed). Its mutex is held only for the look. */
static int engine_holds(EngineObject *engine, const struct fp_tuple *t)
{
	if (engine_lock(engine) < 0)
		return -1;
	int has = fp_engine_has_tuple(engine->engine, t);
	engine_unlock(engine);
	return has;
}

/* Whether the kernel has a socket for t, seen from our side (any family,
 * TIME_WAIT included): 1, 0, or -1 with an exception. */
static int kernel_holds(LabObject *self, const struct fp_tuple *t)
{
	struct diag_call c;
	int rc;

	memcpy(c.laddr, t->remote, sizeof(c.laddr));
	memcpy(c.raddr, t->local, sizeof(c.raddr));
	c.family = t->family == 4 ? AF_INET : AF_INET6;
	c.want_info = 0; /* a pick asks only whether one exists */
	c.lport = t->remote_port;
	c.rport = t->local_port;
	if (locked_call(self, call_diag, &c, &rc) < 0)
		return -1;
	if (rc == -ENOENT)
		return 0;
	if (rc < 0) {
		errno = -rc;
		PyErr_SetFromErrno(PyExc_OSError);
		return -1;
	}
	return 1;
}

/* The first port from self->port_at, round first .. first + count - 1,
 * that no connection of engine's and (in a kernel lab) no kernel socket
 * holds for t's other three fields: 1 with it in t->local_port and
 * port_at past it, 0 when every one is held, -1 with an exception. */
static int pick_port(LabObject *self, EngineObject *engine, uint16_t first,
		     unsigned count, struct fp_tuple *t)
{
	unsigned at = self->port_at >= first && self->port_at - first < count
			      ? self->port_at - first
			      : 0;

	for (unsigned i = 0; i < count; i++) {
		t->local_port = (uint16_t)(first + (at + i) % count);
		int held = engine_holds(engine, t);
		if (held == 0 && !self->stack)
			held = kernel_holds(self, t);
		if (held < 0)
			return -1;
		if (!held) {
			self->port_at = t->local_port + 1u;
			return 1;
		}
	}
	return 0;
}

/*
 * open_picked(engine, local_addr, remote_addr, remote_port, first, count,
 * iss, time_wait, cls=None) -> Connection or None: engine.open from the
 * next source port in turn (the Lab keeps the turn) round first .. first +
 * count - 1 that no connection of engine's and (in a kernel lab) no kernel
 * socket, of either family, TIME_WAIT included, holds towards (remote_addr,
 * remote_port); None when every one is held. lab.open's pick and open in
 * one call: in Python they cost more than the kernel's answer. The caller
 * serialises picks (a port is free only until someone takes it).
 */
static PyObject *lab_open_picked(LabObject *self, PyObject *args)
{
	PyObject *engine_arg, *la, *ra, *rp, *first_arg, *count_arg, *iss_arg,
		*time_wait_arg, *cls = NULL;
	unsigned long long count, iss;
	uint64_t time_wait;
	uint16_t first;
	PyTypeObject *type;
	struct fp_tuple t;

	if (!PyArg_ParseTuple(args, "OOOOOOOO|O:open_picked", &engine_arg, &la,
			      &ra, &rp, &first_arg, &count_arg, &iss_arg,
			      &time_wait_arg, &cls))
		return NULL;
	if (!PyObject_TypeCheck(engine_arg,
				core_state_of_type(Py_TYPE(self))->engine_type))
		return PyErr_Format(
			PyExc_TypeError,
			"engine must be a finprobe._core.Engine, not %s",
			Py_TYPE(engine_arg)->tp_name);
	EngineObject *engine = (EngineObject *)engine_arg;
	if (core_port_arg("first", first_arg, &first) < 0 ||
	    core_unsigned_arg(count_arg, "count", 65536u - first, &count) < 0 ||
	    core_tuple_arg(la, first_arg, ra, rp, &t) < 0 ||
	    core_unsigned_arg(iss_arg, "iss", 0xffffffffu, &iss) < 0 ||
	    core_seconds_arg("time_wait", time_wait_arg, &time_wait) < 0 ||
	    connection_class_arg(engine, cls, &type) < 0 || lab_open(self) < 0)
		return NULL;
	int picked = count ? pick_port(self, engine, first, (unsigned)count, &t)
			   : 0;
	if (picked <= 0) {
		if (picked < 0)
			return NULL;
		Py_RETURN_NONE;
	}
	struct fp_conn *conn;
	if (engine_lock(engine) < 0)
		return NULL;
	int rc = fp_conn_new(&conn, engine->engine, &t, (uint32_t)iss,
			     time_wait);
	engine_unlock(engine);
	if (rc == -EADDRINUSE) /* not in the engine a moment ago */
		return PyErr_Format(
			core_state_of_type(Py_TYPE(self))->error,
			"source port %d was taken while it was picked",
			t.local_port);
	if (rc < 0)
		return PyErr_NoMemory();
	return connection_wrap(engine, type, conn);
}

/*
 * _enter(): for a child between fork and exec (Popen's preexec_fn): the
 * helper kills it when the lab ends, then it joins the lab's namespaces.
 * Only system calls (fp_lab_enter): the lock and anything else another
 * thread held at fork stay untouched.
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
	return lab_open(self) < 0
		       ? NULL
		       : PyLong_FromLong(fp_lab_packet_fd(self->lab));
}
static PyObject *get_netns_fd(LabObject *self, void *c)
{
	return lab_open(self) < 0 ? NULL
				  : PyLong_FromLong(fp_lab_netns_fd(self->lab));
}
static PyObject *get_userns_fd(LabObject *self, void *c)
{
	return lab_open(self) < 0
		       ? NULL
		       : PyLong_FromLong(fp_lab_userns_fd(self->lab));
}
static PyObject *get_closed(LabObject *self, void *c)
{
	return PyBool_FromLong(!self->lab);
}

static PyObject *get_macs(LabObject *self, void *c)
{
	static const uint8_t peer[6] = FP_LAB_PEER_MAC,
			     local[6] = FP_LAB_LOCAL_MAC;
	return Py_BuildValue("(y#y#)", (const char *)local, (Py_ssize_t)6,
			     (const char *)peer, (Py_ssize_t)6);
}

/* The TAP a stack attaches to, or None in a kernel lab. */
static PyObject *get_tap(LabObject *self, void *c)
{
	if (!self->stack)
		Py_RETURN_NONE;
	return PyUnicode_FromString(FP_LAB_TAP);
}

static PyGetSetDef lab_getset[] = {
	{ "tap", (getter)get_tap, NULL,
	  "a stack lab's TAP device name, or None", NULL },
	{ "packet_fd", (getter)get_packet_fd, NULL,
	  "AF_PACKET socket on finprobe's end", NULL },
	{ "netns_fd", (getter)get_netns_fd, NULL,
	  "the kernel's network namespace", NULL },
	{ "userns_fd", (getter)get_userns_fd, NULL,
	  "the lab's user namespace, or -1 (root)", NULL },
	{ "macs", (getter)get_macs, NULL, "(finprobe's MAC, the kernel's MAC)",
	  NULL },
	{ "closed", (getter)get_closed, NULL, "whether close() ended the lab",
	  NULL },
	{ NULL },
};

static PyMethodDef lab_methods[] = {
	{ "close", (PyCFunction)lab_close, METH_NOARGS,
	  "end the helper: namespaces and veth go" },
	{ "socket", (PyCFunction)lab_socket, METH_VARARGS,
	  "socket(family, type, protocol=0) -> socket.socket made in the kernel's namespace" },
	{ "sysctl", (PyCFunction)lab_sysctl, METH_VARARGS,
	  "sysctl(name, value=None) -> str or None" },
	{ "diag", (PyCFunction)lab_diag, METH_VARARGS,
	  "diag(local_addr, local_port, remote_addr, remote_port) -> dict of the kernel's socket, or None" },
	{ "open_picked", (PyCFunction)lab_open_picked, METH_VARARGS,
	  "open_picked(engine, local_addr, remote_addr, remote_port, first, count, iss, time_wait, cls=None)\n"
	  "-> Connection or None: engine.open from the next source port in turn, round first ..\n"
	  "first + count - 1, that no connection of engine's nor (in a kernel lab) any kernel\n"
	  "socket holds towards the remote end; None when every one is held" },
	{ "_enter", (PyCFunction)lab_enter, METH_NOARGS,
	  "_enter(): in a forked child before exec, end with the lab and join its namespaces" },
	{ NULL },
};

static PyType_Slot lab_slots[] = {
	{ Py_tp_doc,
	  "Lab(*, stack=False): two network namespaces joined by veth, a kernel peer in one;\n"
	  "with stack=True one namespace with a TAP device for a user-space stack." },
	{ Py_tp_new, lab_new },
	{ Py_tp_dealloc, lab_dealloc },
	{ Py_tp_getset, lab_getset },
	{ Py_tp_methods, lab_methods },
	{ 0, NULL },
};

PyType_Spec lab_spec = {
	.name = "finprobe._core.Lab",
	.basicsize = sizeof(LabObject),
	.flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE,
	.slots = lab_slots,
};
