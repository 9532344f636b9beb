/*
 * core.h: what the files of the extension finprobe._core share: the module
 * state (heap types and exceptions) and the constructors each type offers
 * the others.
 */
#ifndef FP_EXT_CORE_H
#define FP_EXT_CORE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <pthread.h>

#include "finprobe.h"

typedef struct {
	PyTypeObject *segment_type;
	PyTypeObject *lab_type;
	PyTypeObject *engine_type;
	PyTypeObject *connection_type;
	PyTypeObject *listener_type;
	PyTypeObject *tcb_type;
	PyTypeObject *guard_type;
	PyObject *error; /* finprobe.Error */
	/* finprobe.ParseError(Error, ValueError) */
	PyObject *parse_error;
	/* finprobe.ExpectError(Error, AssertionError) */
	PyObject *expect_error;
	/* finprobe.PermissionError(Error, PermissionError) */
	PyObject *permission_error;
	/* finprobe.ConnectionRefused(Error, ConnectionRefusedError) */
	PyObject *connection_refused;
} core_state;

extern PyModuleDef core_module;

/* The module state of the module that defined type (or of core_module). */
core_state *core_state_of_type(PyTypeObject *type);

/*
 * The C mutexes of the extension (an Engine's, a Guard's) follow two rules,
 * CPython's Modules/_bz2module.c's:
 *  - never block on one while holding the GIL: core_lock tries first, and
 *    only if that fails releases the GIL while it waits. A thread that got
 *    the mutex that way holds it while it waits for the GIL back; blocking
 *    with the GIL held would wait for it forever.
 *  - under one, make or free no Python object, call no Python code: copy
 *    what is needed into C memory, unlock, then build. An allocation may
 *    run the collector, which may free an object whose release takes the
 *    same mutex (a cyclic Connection of the same Engine): on a thread that
 *    already holds it, that is a self-deadlock.
 * From the second it follows that a release run by the collector or a
 * dealloc (which hold the GIL) never finds its own thread holding the
 * mutex, so its core_lock ends.
 */
static inline void core_lock(pthread_mutex_t *m)
{
	if (pthread_mutex_trylock(m) == 0)
		return;
	Py_BEGIN_ALLOW_THREADS
	pthread_mutex_lock(m);
	Py_END_ALLOW_THREADS
}

static inline void core_unlock(pthread_mutex_t *m)
{
	pthread_mutex_unlock(m);
}

/* Seconds, as Python shows times, from the library's ns. */
static inline double ns_to_s(uint64_t ns)
{
	return (double)ns / 1e9;
}

/* segment_type.c: the fields of a struct fp_segment, but of its forty
 * option slots only those in use (ob_size of them, in options[]): the
 * whole array was nine tenths of a kept Segment (~1,900 bytes). */
typedef struct {
	PyObject_VAR_HEAD    /* ob_size: options in use */
	PyObject *payload;   /* bytes */
	PyObject *direction; /* "in", "out" or None */
	/* CLOCK_MONOTONIC seconds; NaN: never on the wire */
	double ts;
	uint32_t seq, ack;
	uint16_t sport, dport, window, urg, checksum;
	uint8_t family, ttl, flags;
	uint8_t force_checksum, tcp_checksum_ok, ip_checksum_ok;
	uint8_t has_checksum; /* parsed, or forced by the caller */
	/* SRC_MISSING | DST_MISSING: not given to the constructor */
	uint8_t unaddressed;
	uint8_t src[16], dst[16];
	struct fp_option options[];
} SegmentObject;

/* The segment as the C library takes it; seg->payload points into self's
 * payload, valid while self lives. */
void segment_unpack(const SegmentObject *self, struct fp_segment *seg);

extern PyType_Spec segment_spec;
/* A Segment holding a copy of seg and its payload. ts < 0: none. */
PyObject *segment_new_from(core_state *st, const struct fp_segment *seg,
			   double ts, const char *direction);
/* The wire bytes of a Segment, or NULL with ValueError. */
PyObject *segment_to_bytes(SegmentObject *self);

/* lab_type.c */
extern PyType_Spec lab_spec;

/* engine_type.c, connection_type.c, listener_type.c (engine.h) */
extern PyType_Spec engine_spec;
extern PyType_Spec connection_spec;
extern PyType_Spec listener_spec;

/* tcb_type.c */
extern PyType_Spec tcb_spec;

/* guard_type.c */
extern PyType_Spec guard_spec;

/* pcap_funcs.c: write_pcap, read_pcap, wall_offset_ns */
extern PyMethodDef pcap_functions[];

/* address.c */
/* The UTF-8 of str text, valid while text lives; NULL with ValueError
 * naming what if it holds a NUL character, which C would take for its end
 * ("192.0.2.1\0junk" read as "192.0.2.1"). */
const char *core_text(const char *what, PyObject *text);
/* Address text ("192.0.2.1", "2001:db8::1") to bytes; family 4 or 6.
 * Returns -1 with TypeError or ValueError naming what. */
int core_parse_address(const char *what, PyObject *text, uint8_t *addr,
		       uint8_t *family);
/* The text of an address into out (INET6_ADDRSTRLEN bytes): its length,
 * or 0 if family is neither 4 nor 6. */
size_t core_address_text(int family, const uint8_t *addr, char *out);
/* The text as a str; None if family is neither 4 nor 6. */
PyObject *core_format_address(int family, const uint8_t *addr);

/* args.c: argument conversions the types share. Each returns 0, or -1 with
 * TypeError or ValueError naming the argument, its value and what was
 * expected. */
/* How an int checks against 0..max (a bool is not an int here), for callers
 * that word the message themselves; CORE_NUM_ERROR has an exception set. */
enum { CORE_NUM_OK, CORE_NUM_TYPE, CORE_NUM_RANGE, CORE_NUM_ERROR };
int core_unsigned_check(PyObject *value, unsigned long long max,
			unsigned long long *out);
/* An int in 0..max (a bool is refused). */
int core_unsigned_arg(PyObject *value, const char *name, unsigned long long max,
		      unsigned long long *out);
/* An int in 1..65535 (a bool is refused). */
int core_port_arg(const char *name, PyObject *value, uint16_t *port);
/* (local_addr, local_port, remote_addr, remote_port), the addresses of one
 * IP version, into t. */
int core_tuple_arg(PyObject *local_addr, PyObject *local_port,
		   PyObject *remote_addr, PyObject *remote_port,
		   struct fp_tuple *t);
/* The same from exactly four positional arguments of function fname. */
int core_tuple_args(PyObject *args, const char *fname, struct fp_tuple *t);
/* The longest wait, or duration, in seconds: threading.TIMEOUT_MAX. As ns
 * it fits in an int64, so that a deadline (now + ns) cannot wrap. */
#define CORE_SECONDS_MAX 9223372036.0
#define CORE_SECONDS_MAX_TEXT "9223372036"
/* Seconds (an int or a float, not a bool) as ns: the one rule for every
 * timeout and duration. NaN or less than 0: ValueError; more than
 * CORE_SECONDS_MAX, inf included: OverflowError, as threading.Event.wait
 * raises. Runs no caller code (no __float__, no __index__). */
int core_seconds_arg(const char *name, PyObject *value, uint64_t *ns);

/* Milliseconds to wait in one slice of a wait that ends at deadline (ns,
 * CLOCK_MONOTONIC): what is left, rounded up, at most cap; 0 once it has
 * passed. Waits go in slices so that signals run between them. */
static inline int core_slice_ms(uint64_t deadline, int cap)
{
	uint64_t now = fp_now_ns();
	if (now >= deadline)
		return 0;
	uint64_t left = (deadline - now + 999999) / 1000000;
	return left > (uint64_t)cap ? cap : (int)left;
}

#endif /* FP_EXT_CORE_H */
