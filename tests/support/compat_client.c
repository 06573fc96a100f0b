/* HTTP/1.1 over plain write/read, with 32-bit (ia32) syscalls on the same socket in between,
 * for netsonde's capture tests (loopback only, x86-64).
 *
 *   compat_client PORT PATH
 *
 * A 64-bit program may make ia32 syscalls through `int $0x80`; they are numbered as on i386,
 * where 3 is read and 20 getpid (on x86-64, 3 is close and 20 writev). Between sending the
 * request and reading the response this client makes ia32 read(fd, buf, 0) and getpid() with
 * the socket in the first argument register: a tracer that took the numbers for 64-bit ones
 * would see the socket closed, or a writev of thousands of bytes on it. C, for the inline
 * assembly. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static long ia32_syscall(long nr, long a, long b, long c) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "a"(nr), "b"(a), "c"(b), "d"(c) : "memory");
    return ret;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s PORT PATH\n", argv[0]);
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        return 1;
    }
    char request[512];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", argv[2]);
    if (write(fd, request, n) != n) {
        perror("write");
        return 1;
    }
    for (int i = 0; i < 3; i++) {
        long r = ia32_syscall(3, fd, 0, 0); /* i386 read(fd, NULL, 0) */
        long p = ia32_syscall(20, fd, 0, 0); /* i386 getpid() */
        if (r != 0 || p != getpid()) {
            fprintf(stderr, "ia32 syscalls: read=%ld getpid=%ld\n", r, p);
            return 1;
        }
    }
    char buf[4096];
    long total = 0, got;
    while ((got = read(fd, buf, sizeof buf)) > 0) total += got;
    close(fd);
    printf("%ld bytes\n", total);
    return 0;
}
