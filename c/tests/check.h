/*
 * check.h: the C tests' harness. A test is a static void function; RUN()
 * calls it and counts; a failed CHECK prints file:line, what was expected
 * and what was got, and the test goes on. check_summary() prints
 * "<name>: N passed, N failed" and gives the exit status.
 */
#ifndef FP_CHECK_H
#define FP_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int check_tests_run, check_tests_failed, check_failed_here;

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, \
				__LINE__, #cond);                              \
			check_failed_here = 1;                                 \
		}                                                              \
	} while (0)

#define CHECK_EQ(got, expected)                                                \
	do {                                                                   \
		long long g_ = (long long)(got), e_ = (long long)(expected);   \
		if (g_ != e_) {                                                \
			fprintf(stderr,                                        \
				"%s:%d: %s: expected %lld (%s), got %lld\n",   \
				__FILE__, __LINE__, #got, e_, #expected, g_);  \
			check_failed_here = 1;                                 \
		}                                                              \
	} while (0)

#define CHECK_STR(got, expected)                                               \
	do {                                                                   \
		const char *g_ = (got), *e_ = (expected);                      \
		if (strcmp(g_, e_) != 0) {                                     \
			fprintf(stderr, "%s:%d: %s: expected \"%s\", got \"%s\"\n", \
				__FILE__, __LINE__, #got, e_, g_);             \
			check_failed_here = 1;                                 \
		}                                                              \
	} while (0)

#define RUN(test)                                                              \
	do {                                                                   \
		check_failed_here = 0;                                         \
		test();                                                        \
		check_tests_run++;                                             \
		if (check_failed_here) {                                       \
			check_tests_failed++;                                  \
			fprintf(stderr, "FAILED %s\n", #test);                 \
		}                                                              \
	} while (0)

static inline int check_summary(const char *name)
{
	printf("%s: %d passed, %d failed\n", name,
	       check_tests_run - check_tests_failed, check_tests_failed);
	return check_tests_failed ? 1 : 0;
}

#endif /* FP_CHECK_H */
