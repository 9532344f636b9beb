/*
 * clock.h: a clock read as nanoseconds. finprobe stamps with
 * CLOCK_MONOTONIC (fp_now_ns) and turns stamps into wall-clock time with
 * CLOCK_REALTIME (fp_trace_wall_offset_ns); both read through here.
 */
#ifndef FP_CLOCK_H
#define FP_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t clock_ns(clockid_t clock)
{
	struct timespec ts;
	clock_gettime(clock, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif /* FP_CLOCK_H */
