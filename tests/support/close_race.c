/* A plain HTTP client for tests/capture.rs whose socket is closed by another thread while a
 * read() on it is waiting, and whose fd number is taken by a new connection meanwhile: the
 * read then returns bytes of the closed connection (the kernel keeps its file open until the
 * read returns), which must not count on the new one.
 *
 *   close_race NGINX_PORT
 *
 * A server thread of this program listens on a free loopback port and answers "GET /late"
 * only when told to. Thread R connects to it, sends the request and waits in read(). Once R is
 * in read() (/proc/self/task/TID/syscall), the main thread closes R's fd, connects to nginx on
 * 127.0.0.1:NGINX_PORT (the kernel gives it the same fd number: the lowest free) and makes a
 * keep-alive "GET /ka" there; then it lets the server answer, waits for R's read to return,
 * and makes a second request on the new connection, "GET /index.html". Prints "same fd N",
 * "late BYTES" (what R's read returned), and "plain STATUS BYTES" per nginx answer.
 */
#define _GNU_SOURCE /* strcasestr, gettid */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int answer; /* the server thread may answer */
static int listener, server_port, late_fd;
static pid_t reader_tid;
static ssize_t late_bytes = -1;

static void fail(const char *what)
{
    perror(what);
    exit(1);
}

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0)
        fail("connect");
    return fd;
}

static void write_all(int fd, const char *text)
{
    size_t len = strlen(text);
    if (write(fd, text, len) != (ssize_t)len)
        fail("write");
}

/* Accepts one connection, reads its request head, and answers once `answer` is set. */
static void *server(void *unused)
{
    (void)unused;
    int fd = accept(listener, NULL, NULL);
    if (fd < 0)
        fail("accept");
    char head[4096];
    size_t have = 0;
    while (!memmem(head, have, "\r\n\r\n", 4)) {
        ssize_t n = read(fd, head + have, sizeof head - have);
        if (n <= 0)
            fail("server read");
        have += (size_t)n;
    }
    pthread_mutex_lock(&lock);
    while (!answer)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    write_all(fd, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlate\n");
    /* Until the client side is gone: its close is what ends this connection. */
    char rest[64];
    while (read(fd, rest, sizeof rest) > 0)
        ;
    close(fd);
    return NULL;
}

static void *reader(void *unused)
{
    (void)unused;
    reader_tid = gettid();
    char buf[4096];
    late_bytes = read(late_fd, buf, sizeof buf);
    return NULL;
}

/* Whether thread `tid` of this process is waiting in read(2): its syscall number first in
 * /proc (a running thread shows "running" there instead). */
static int in_read(pid_t tid)
{
    char path[64], line[256] = "";
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int ok = fgets(line, sizeof line, f) && line[0] >= '0' && line[0] <= '9' &&
             atol(line) == SYS_read;
    fclose(f);
    return ok;
}

/* Sends one GET on fd and reads its answer whole; prints "plain STATUS BYTES". */
static void get(int fd, const char *path)
{
    char request[256];
    snprintf(request, sizeof request, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    write_all(fd, request);
    char head[8192];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        ssize_t n = read(fd, head + have, sizeof head - 1 - have);
        if (n <= 0)
            fail("plain read");
        have += (size_t)n;
        head[have] = 0;
        end = strstr(head, "\r\n\r\n");
    }
    const char *length = strcasestr(head, "\r\ncontent-length:");
    long body = length ? atol(length + 17) : 0;
    long left = body - (long)(have - (size_t)(end + 4 - head));
    while (left > 0) {
        char rest[4096];
        ssize_t n = read(fd, rest, left < (long)sizeof rest ? (size_t)left : sizeof rest);
        if (n <= 0)
            fail("plain body");
        left -= n;
    }
    printf("plain %d %ld\n", atoi(head + 9), body);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: close_race NGINX_PORT\n");
        return 2;
    }
    listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1) != 0 ||
        getsockname(listener, (struct sockaddr *)&addr, &len) != 0)
        fail("listen");
    server_port = ntohs(addr.sin_port);
    pthread_t server_thread, reader_thread;
    pthread_create(&server_thread, NULL, server, NULL);

    late_fd = connect_to(server_port);
    write_all(late_fd, "GET /late HTTP/1.1\r\nHost: localhost\r\n\r\n");
    pthread_create(&reader_thread, NULL, reader, NULL);
    while (!reader_tid || !in_read(reader_tid))
        usleep(1000);

    int closed = late_fd;
    close(closed);
    int plain_fd = connect_to(atoi(argv[1]));
    printf("same fd %d\n", plain_fd == closed ? plain_fd : -1);
    get(plain_fd, "/ka");
    pthread_mutex_lock(&lock);
    answer = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    pthread_join(reader_thread, NULL);
    printf("late %zd\n", late_bytes);
    get(plain_fd, "/index.html");
    close(plain_fd);
    /* The late connection's socket went with the reader's read: the server sees its close. */
    pthread_join(server_thread, NULL);
    return 0;
}
