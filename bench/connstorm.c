/* Open and close loopback TCP connections as fast as CLIENTS threads can
 * for SECONDS, against an accept loop in the same process; print the
 * number of connections accepted. Load generator for record_bench.py. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static atomic_long accepted;
static atomic_int done;
static struct sockaddr_in addr;
static double seconds;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *serve(void *arg)
{
	int listener = *(int *)arg;
	while (!atomic_load(&done)) {
		int fd = accept(listener, NULL, NULL);
		if (fd >= 0) {
			atomic_fetch_add(&accepted, 1);
			close(fd);
		}
	}
	return NULL;
}

static void *connect_loop(void *arg)
{
	double end = now() + seconds;
	struct linger no_time_wait = {1, 0};
	while (now() < end) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		/* RST on close: no TIME_WAIT, so ephemeral ports do not run out. */
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &no_time_wait, sizeof(no_time_wait));
		connect(fd, (struct sockaddr *)&addr, sizeof(addr));
		close(fd);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int clients = argc > 1 ? atoi(argv[1]) : 2;
	seconds = argc > 2 ? atof(argv[2]) : 3.0;
	int listener = socket(AF_INET, SOCK_STREAM, 0);
	int one = 1;
	socklen_t len = sizeof(addr);
	pthread_t server, threads[64];

	setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	addr.sin_family = AF_INET;
	addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	addr.sin_port = 0;
	if (bind(listener, (struct sockaddr *)&addr, sizeof(addr)) || listen(listener, 4096))
		return 1;
	getsockname(listener, (struct sockaddr *)&addr, &len);
	pthread_create(&server, NULL, serve, &listener);
	for (int i = 0; i < clients && i < 64; i++)
		pthread_create(&threads[i], NULL, connect_loop, NULL);
	for (int i = 0; i < clients && i < 64; i++)
		pthread_join(threads[i], NULL);
	atomic_store(&done, 1);
	/* Wake the accept loop with one last connection. */
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	connect(fd, (struct sockaddr *)&addr, sizeof(addr));
	close(fd);
	pthread_join(server, NULL);
	printf("%ld\n", atomic_load(&accepted));
	return 0;
}
