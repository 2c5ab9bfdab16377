/* Fork, exec /bin/true and reap, as fast as WORKERS processes can, for
 * SECONDS; print the number of processes started. Load generator for
 * record_bench.py. */
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	int workers = argc > 1 ? atoi(argv[1]) : 2;
	double seconds = argc > 2 ? atof(argv[2]) : 3.0;
	int pipes[2];

	if (pipe(pipes))
		return 1;
	for (int w = 0; w < workers; w++) {
		if (fork() == 0) {
			long started = 0;
			double end = now() + seconds;
			char *args[] = {"true", NULL};
			while (now() < end) {
				pid_t pid = fork();
				if (pid == 0) {
					execv("/bin/true", args);
					_exit(127);
				}
				if (pid > 0) {
					waitpid(pid, NULL, 0);
					started++;
				}
			}
			write(pipes[1], &started, sizeof(started));
			_exit(0);
		}
	}
	long total = 0, part;
	for (int w = 0; w < workers; w++) {
		if (read(pipes[0], &part, sizeof(part)) == sizeof(part))
			total += part;
		wait(NULL);
	}
	printf("%ld\n", total);
	return 0;
}
