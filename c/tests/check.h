/*
 * check.h: the C tests' harness. A test is a static void function; RUN()
 * calls it and counts; a failed CHECK prints file:line, what was expected
 * and what was got, and the test goes on. A test that evaluated no CHECK
 * at all fails too: it proves nothing, whatever its name says; one that
 * cannot run here says so with SKIP(why) instead. check_summary() prints
 * "<name>: N passed, N failed" and gives the exit status.
 */
#ifndef FP_CHECK_H
#define FP_CHECK_H

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static int check_tests_run, check_tests_failed, check_failed_here;
static int check_tests_skipped;
static const char *check_skipped_here; /* why the running test skipped */
static long check_evaluated_here; /* CHECKs evaluated by the running test */

#define CHECK(cond)                                                            \
	do {                                                                   \
		check_evaluated_here++;                                        \
		if (!(cond)) {                                                 \
			fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, \
				__LINE__, #cond);                              \
			check_failed_here = 1;                                 \
		}                                                              \
	} while (0)

#define CHECK_EQ(got, expected)                                                \
	do {                                                                   \
		check_evaluated_here++;                                        \
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
		check_evaluated_here++;                                        \
		const char *g_ = (got), *e_ = (expected);                      \
		if (strcmp(g_, e_) != 0) {                                     \
			fprintf(stderr,                                        \
				"%s:%d: %s: expected \"%s\", got \"%s\"\n",    \
				__FILE__, __LINE__, #got, e_, g_);             \
			check_failed_here = 1;                                 \
		}                                                              \
	} while (0)

/* The running test cannot run here (no root, no user namespaces): it
 * returns after this, and is counted as skipped rather than passed. */
#define SKIP(why)                                                              \
	do {                                                                   \
		check_skipped_here = (why);                                    \
	} while (0)

#define RUN(test)                                                              \
	do {                                                                   \
		check_failed_here = 0;                                         \
		check_skipped_here = NULL;                                     \
		check_evaluated_here = 0;                                      \
		test();                                                        \
		check_tests_run++;                                             \
		if (check_skipped_here && !check_failed_here) {                \
			check_tests_skipped++;                                 \
			printf("SKIPPED %s: %s\n", #test, check_skipped_here); \
			break;                                                 \
		}                                                              \
		if (check_evaluated_here == 0) {                               \
			fprintf(stderr, "%s: no CHECK evaluated\n", #test);    \
			check_failed_here = 1;                                 \
		}                                                              \
		if (check_failed_here) {                                       \
			check_tests_failed++;                                  \
			fprintf(stderr, "FAILED %s\n", #test);                 \
		}                                                              \
	} while (0)

static inline int check_summary(const char *name)
{
	printf("%s: %d passed, %d failed", name,
	       check_tests_run - check_tests_failed - check_tests_skipped,
	       check_tests_failed);
	if (check_tests_skipped)
		printf(", %d skipped", check_tests_skipped);
	printf("\n");
	return check_tests_failed ? 1 : 0;
}

#endif /* FP_CHECK_H */
