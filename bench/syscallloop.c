/* Call getppid(2) COUNT times through syscall(2) and print the CPU time of
 * one call in nanoseconds. Load generator for syscall_cost.py. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double cpu_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 1000000;
	double start = cpu_ns();

	for (long i = 0; i < count; i++)
		syscall(SYS_getppid);
	printf("%.1f\n", (cpu_ns() - start) / count);
	return 0;
}
