/* A TLS client with OpenSSL linked in statically, for tests/tls.rs: the program netsonde must
 * find SSL_read/SSL_write in (its symbol table), or say it cannot (stripped).
 *
 *   static_tls_client PORT PATH...   one connection to 127.0.0.1:PORT over TLS (the server's
 *                                    certificate is not checked), a keep-alive GET of each
 *                                    PATH in turn; prints "STATUS BYTES" per response
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Reads one response whole: its head, then Content-Length bytes of body. */
static int response(SSL *ssl, int *status, long *body)
{
    char head[16384];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have + 1 >= sizeof head)
            return -1;
        int n = SSL_read(ssl, head + have, (int)(sizeof head - 1 - have));
        if (n <= 0)
            return -1;
        have += (size_t)n;
        head[have] = 0;
        end = strstr(head, "\r\n\r\n");
    }
    *status = atoi(head + 9);
    const char *length = strcasestr(head, "\r\ncontent-length:");
    *body = length ? atol(length + 17) : 0;
    long left = *body - (long)(have - (size_t)(end + 4 - head));
    char buf[16384];
    while (left > 0) {
        int n = SSL_read(ssl, buf, left < (long)sizeof buf ? (int)left : (int)sizeof buf);
        if (n <= 0)
            return -1;
        left -= n;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: static_tls_client PORT PATH...\n");
        return 2;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[1]))};
    inet_pton(AF_INET, "127.0.0.1", &addr.sin_addr);
    if (!ctx || fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        return 1;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        fprintf(stderr, "TLS handshake failed\n");
        return 1;
    }
    for (int i = 2; i < argc; i++) {
        char request[1024];
        int len = snprintf(request, sizeof request,
                           "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", argv[i]);
        int status;
        long body;
        if (SSL_write(ssl, request, len) != len || response(ssl, &status, &body) != 0) {
            fprintf(stderr, "request %s failed\n", argv[i]);
            return 1;
        }
        printf("%d %ld\n", status, body);
        fflush(stdout);
    }
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    return 0;
}
