/*
 * trace_log.h: what the engine does to a trace beyond the public API. A
 * connection's trace is also its receive queue: inbound records wait there
 * untaken until fp_conn_take hands them over and marks them. These calls
 * belong to the trace's writer (engine.c), under its serialization; they
 * are not exported.
 */
#ifndef FP_TRACE_LOG_H
#define FP_TRACE_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "finprobe.h"

/* The index of the oldest inbound record not taken yet, or fp_trace_len()
 * when none waits. Remembers where it stopped, so a queue drained in order
 * is walked once. */
size_t fp_trace_next_untaken(struct fp_trace *trace);

/* Inbound records not taken yet. */
size_t fp_trace_pending(struct fp_trace *trace);

/* Record i was handed to the caller; state_after is our state once the
 * TCB processed it. i must be below fp_trace_len(). */
void fp_trace_mark_taken(struct fp_trace *trace, size_t i, uint8_t state_after);

/* Append a state change of the connection writing the trace. Returns 0 or
 * -ENOMEM (the transition is then not kept). */
int fp_trace_add_transition(struct fp_trace *trace,
			    const struct fp_transition *t);

/* Drop every record and transition, keeping the memory for new ones (a
 * listener's trace once all it caught was handed over). */
void fp_trace_clear(struct fp_trace *trace);

/* Heap bytes the trace holds: its struct, record array, arena and
 * transitions, counted by capacity (what malloc gave, not what is used). */
size_t fp_trace_bytes(const struct fp_trace *trace);

#endif /* FP_TRACE_LOG_H */
