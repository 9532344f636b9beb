/*
 * test_check.c: the harness (check.h) itself. A test that evaluates no
 * CHECK is refused, a skipped one is counted apart, so that a test whose
 * body lost its asserts cannot pass for one that proves something.
 */
#include <fcntl.h>
#include <unistd.h>

#include "check.h"

static void asserts_nothing(void)
{
}

static void skips_here(void)
{
	SKIP("nothing to run on");
}

static void checks_once(void)
{
	CHECK_EQ(1 + 1, 2);
}

/* The harness's verdicts on the three tests above, counters restored. */
static int refused, skipped, passed;

static void judge_quietly(void)
{
	int out = dup(STDOUT_FILENO), err = dup(STDERR_FILENO);
	int null = open("/dev/null", O_WRONLY);

	fflush(NULL);
	/* the FAILED and SKIPPED lines are the point here, not news */
	dup2(null, STDOUT_FILENO);
	dup2(null, STDERR_FILENO);
	RUN(asserts_nothing);
	refused = check_tests_failed == 1;
	RUN(skips_here);
	skipped = check_tests_skipped == 1 && check_tests_failed == 1;
	RUN(checks_once);
	passed = check_tests_failed == 1 && check_tests_run == 3;
	fflush(NULL);
	dup2(out, STDOUT_FILENO);
	dup2(err, STDERR_FILENO);
	close(out);
	close(err);
	close(null);
	check_tests_run = check_tests_failed = check_tests_skipped = 0;
}

static void test_a_test_evaluating_no_check_fails(void)
{
	CHECK(refused);
}

static void test_a_skipped_test_neither_fails_nor_passes(void)
{
	CHECK(skipped);
}

static void test_a_test_with_a_true_check_passes(void)
{
	CHECK(passed);
}

int main(void)
{
	judge_quietly();
	RUN(test_a_test_evaluating_no_check_fails);
	RUN(test_a_skipped_test_neither_fails_nor_passes);
	RUN(test_a_test_with_a_true_check_passes);
	return check_summary("test_check");
}
