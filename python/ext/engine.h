/*
 * engine.h: what Engine, Connection and Listener (engine_type.c,
 * connection_type.c, listener_type.c) share: the Engine object with its
 * mutex, and the waits and constructors each offers the others. Private to
 * the extension.
 */
#ifndef FP_EXT_ENGINE_H
#define FP_EXT_ENGINE_H

#include "core.h"

#define WAIT_SLICE_MS 50

typedef struct {
	PyObject_HEAD
	struct fp_engine *engine;
	pthread_mutex_t lock;
	PyObject *owner; /* what keeps the link's descriptor alive (a Lab) */
} EngineObject;

typedef struct {
	PyObject_HEAD
	EngineObject *engine;
	struct fp_listener *listener;
} ListenerObject;

/* engine_type.c */
/* 0 if the engine is open, else -1 with fp.Error. */
int engine_open_check(EngineObject *self);
/* Take the engine's mutex (core_lock) if the engine is open: 0, or -1 with
 * fp.Error and the mutex not held. Checked under the mutex, so that a
 * close() by caller code run earlier in the call, or by another thread
 * while this one waited, is seen. */
int engine_lock(EngineObject *self);
static inline void engine_unlock(EngineObject *self)
{
	core_unlock(&self->lock);
}
/* One slice of a wait until deadline (ns): 1 to look again, 0 once it has
 * passed, -1 with an exception. */
int engine_wait_slice(EngineObject *self, uint64_t deadline);

/* connection_type.c */
/* A Connection of class cls over conn, which it takes over (and frees on
 * failure). */
PyObject *connection_wrap(EngineObject *engine, PyTypeObject *cls,
			  struct fp_conn *conn);
/* cls (None: Connection) checked to be a Connection class. */
int connection_class_arg(EngineObject *self, PyObject *cls, PyTypeObject **out);

#endif /* FP_EXT_ENGINE_H */
