/*
 * rawlimits: the machine's own ceilings for bench/compare.sh.
 *
 *   rawlimits tcp     SECONDS CHUNK          loopback TCP, one sender thread, one receiver
 *   rawlimits append  DIR BYTES CHUNK        append to a new file in DIR (page cache, no fsync;
 *                                            Fjord's default flush policy is Kafka's: no fsync)
 *   rawlimits tcp+append DIR SECONDS CHUNK   receiver appends what it reads to a file in DIR:
 *                                            the ceiling for a broker that only moves bytes
 *
 * Prints one line: "<mode> bytes=N seconds=S MBps=X", and for the TCP modes the CPU time each
 * side spent per MB moved (rx_cpu_us_per_MB, tx_cpu_us_per_MB, from getrusage(RUSAGE_THREAD)):
 * the cheapest a broker's receive (and append) or send of the same bytes can be.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* CPU time (user + system) of the calling thread, in seconds. */
static double thread_cpu(void) {
        struct rusage ru;
        getrusage(RUSAGE_THREAD, &ru);
        return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
               ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what) {
        perror(what);
        exit(1);
}

struct sender {
        int port;
        size_t chunk;
        double seconds;
        double cpu; /* out: the sender thread's CPU seconds */
};

static void *send_loop(void *arg) {
        struct sender *s = arg;
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s->port)};
        int one = 1;
        char *buf = calloc(1, s->chunk);
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
                die("connect");
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        double cpu0 = thread_cpu();
        double end = now() + s->seconds;
        while (now() < end) {
                size_t off = 0;
                while (off < s->chunk) {
                        ssize_t n = write(fd, buf + off, s->chunk - off);
                        if (n <= 0)
                                die("write");
                        off += n;
                }
        }
        s->cpu = thread_cpu() - cpu0;
        close(fd);
        free(buf);
        return NULL;
}

/* Receive until the sender closes; append to out_fd if >= 0. */
static void tcp(double seconds, size_t chunk, int out_fd, const char *label) {
        int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
        struct sockaddr_in a = {.sin_family = AF_INET};
        socklen_t alen = sizeof(a);
        pthread_t th;
        struct sender s;
        char *buf = malloc(chunk);
        size_t total = 0;
        off_t pos = 0;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 1) ||
            getsockname(lfd, (struct sockaddr *)&a, &alen))
                die("listen");
        s.port = ntohs(a.sin_port);
        s.chunk = chunk;
        s.seconds = seconds;
        pthread_create(&th, NULL, send_loop, &s);
        int c = accept(lfd, NULL, NULL);
        if (c < 0)
                die("accept");
        double t0 = now(), cpu0 = thread_cpu();
        for (;;) {
                ssize_t n = read(c, buf, chunk);
                if (n < 0)
                        die("read");
                if (n == 0)
                        break;
                if (out_fd >= 0) {
                        if (pwrite(out_fd, buf, n, pos) != n)
                                die("pwrite");
                        pos += n;
                }
                total += n;
        }
        double dt = now() - t0, rx_cpu = thread_cpu() - cpu0;
        pthread_join(th, NULL);
        printf("%s bytes=%zu seconds=%.3f MBps=%.1f rx_cpu_us_per_MB=%.1f tx_cpu_us_per_MB=%.1f\n",
               label, total, dt, total / dt / 1e6, rx_cpu * 1e12 / total, s.cpu * 1e12 / total);
        close(c);
        close(lfd);
        free(buf);
}

static int new_file(const char *dir) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/rawlimits.%d", dir, (int)getpid());
        int fd = open(path, O_CREAT | O_TRUNC | O_RDWR, 0644);
        if (fd < 0)
                die(path);
        unlink(path); /* freed on exit */
        return fd;
}

int main(int argc, char **argv) {
        if (argc >= 4 && !strcmp(argv[1], "tcp")) {
                tcp(atof(argv[2]), (size_t)atol(argv[3]), -1, "tcp");
        } else if (argc >= 5 && !strcmp(argv[1], "append")) {
                int fd = new_file(argv[2]);
                size_t total = (size_t)atol(argv[3]), chunk = (size_t)atol(argv[4]), done = 0;
                char *buf = calloc(1, chunk);
                double t0 = now();
                while (done < total) {
                        if (pwrite(fd, buf, chunk, done) != (ssize_t)chunk)
                                die("pwrite");
                        done += chunk;
                }
                double dt = now() - t0;
                printf("append bytes=%zu seconds=%.3f MBps=%.1f\n", done, dt, done / dt / 1e6);
        } else if (argc >= 5 && !strcmp(argv[1], "tcp+append")) {
                tcp(atof(argv[3]), (size_t)atol(argv[4]), new_file(argv[2]), "tcp+append");
        } else {
                fprintf(stderr, "usage: rawlimits tcp SECONDS CHUNK | append DIR BYTES CHUNK | "
                                "tcp+append DIR SECONDS CHUNK\n");
                return 2;
        }
        return 0;
}
