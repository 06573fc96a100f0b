/* A one-process HTTP/1.1 server for the kernel-matrix guest (tests/vm_matrix.rs).
 *
 *   tiny_httpd IP PORT      (IPv4 or IPv6)
 *
 * Accepts connections one at a time on IP:PORT, reads each request head, answers 200 with a
 * short body and closes. It reads and writes the accepted socket itself: busybox httpd hands
 * the socket to a child as stdin and stdout, two descriptors netsonde tracks apart. Runs until
 * killed. Built static, so the guest needs no libraries for it. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: tiny_httpd IP PORT\n");
        return 2;
    }
    /* An IPv6 address has a colon: both families cross the socket layer's programs. */
    int v6 = strchr(argv[1], ':') != NULL;
    int listener = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
    struct sockaddr_in6 addr6 = {.sin6_family = AF_INET6, .sin6_port = htons(atoi(argv[2]))};
    int parsed = v6 ? inet_pton(AF_INET6, argv[1], &addr6.sin6_addr)
                    : inet_pton(AF_INET, argv[1], &addr.sin_addr);
    struct sockaddr *at = v6 ? (struct sockaddr *)&addr6 : (struct sockaddr *)&addr;
    socklen_t at_len = v6 ? sizeof addr6 : sizeof addr;
    if (parsed != 1 || bind(listener, at, at_len) != 0 || listen(listener, 8) != 0) {
        perror("tiny_httpd: listen");
        return 1;
    }
    static const char response[] =
        "HTTP/1.1 200 OK\r\nContent-Length: 21\r\nConnection: close\r\n\r\nhello from the guest\n";
    for (;;) {
        int conn = accept(listener, NULL, NULL);
        if (conn < 0)
            continue;
        char head[4096];
        size_t got = 0;
        while (got < sizeof head - 1) {
            ssize_t n = read(conn, head + got, sizeof head - 1 - got);
            if (n <= 0)
                break;
            got += (size_t)n;
            head[got] = 0;
            if (strstr(head, "\r\n\r\n"))
                break;
        }
        if (write(conn, response, sizeof response - 1) < 0)
            perror("tiny_httpd: write");
        close(conn);
    }
}
