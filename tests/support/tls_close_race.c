/* A TLS client for tests/tls.rs whose socket is closed by another thread while an SSL_read
 * is between its recv and its return, and whose fd number is taken by a new plain connection
 * meanwhile: the race that would put the TLS answer on the new connection.
 *
 *   tls_close_race TLS_PORT PLAIN_PORT
 *
 * Thread R sends "GET /index.html" over TLS to 127.0.0.1:TLS_PORT and calls SSL_read. A BIO
 * callback stops R right after its socket read returned bytes, inside SSL_read. The main
 * thread then closes R's fd, connects to 127.0.0.1:PLAIN_PORT (the kernel gives it the same fd
 * number: the lowest free), makes a plain keep-alive "GET /ka" there and reads the answer
 * whole, and only then lets R go on. Prints "same fd N", "plain STATUS BYTES" and "tls BYTES"
 * (the plaintext SSL_read returned). The system's libssl, linked dynamically.
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t changed = PTHREAD_COND_INITIALIZER;
static int read_returned; /* R's socket read returned bytes, inside SSL_read */
static int replaced;      /* the main thread closed R's fd and used its number */
static SSL *ssl;
static int tls_bytes = -1;

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        perror("connect");
        exit(1);
    }
    return fd;
}

/* After each read of the socket BIO: the first one that brought bytes stops the thread until
 * the main thread has replaced the socket. */
static long after_read(BIO *bio, int oper, const char *argp, size_t len, int argi, long argl,
                       int ret, size_t *processed)
{
    (void)bio, (void)argp, (void)len, (void)argi, (void)argl, (void)processed;
    if (oper == (BIO_CB_READ | BIO_CB_RETURN) && ret > 0) {
        pthread_mutex_lock(&lock);
        if (!read_returned) {
            read_returned = 1;
            pthread_cond_broadcast(&changed);
            while (!replaced)
                pthread_cond_wait(&changed, &lock);
        }
        pthread_mutex_unlock(&lock);
    }
    return ret;
}

static void *reader(void *unused)
{
    (void)unused;
    char buf[16384];
    tls_bytes = SSL_read(ssl, buf, sizeof buf);
    return NULL;
}

/* Reads one plain response whole from fd; returns its status, and its body size in *body. */
static int plain_response(int fd, long *body)
{
    char head[16384];
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        ssize_t n = read(fd, head + have, sizeof head - 1 - have);
        if (n <= 0)
            exit(1);
        have += (size_t)n;
        head[have] = 0;
        end = strstr(head, "\r\n\r\n");
    }
    const char *length = strcasestr(head, "\r\ncontent-length:");
    *body = length ? atol(length + 17) : 0;
    long left = *body - (long)(have - (size_t)(end + 4 - head));
    while (left > 0) {
        char rest[4096];
        ssize_t n = read(fd, rest, left < (long)sizeof rest ? (size_t)left : sizeof rest);
        if (n <= 0)
            exit(1);
        left -= n;
    }
    return atoi(head + 9);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: tls_close_race TLS_PORT PLAIN_PORT\n");
        return 2;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    /* One socket read takes every record waiting, so the SSL_read stopped after its read
     * needs no other: the fd it read is closed by then. */
    SSL_CTX_set_read_ahead(ctx, 1);
    int tls_fd = connect_to(atoi(argv[1]));
    ssl = SSL_new(ctx);
    SSL_set_fd(ssl, tls_fd);
    if (SSL_connect(ssl) != 1) {
        fprintf(stderr, "handshake failed\n");
        return 1;
    }
    const char request[] = "GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if (SSL_write(ssl, request, (int)strlen(request)) <= 0)
        return 1;
    /* The answer (and TLS 1.3's session tickets) wait in the socket for the one read. */
    usleep(200000);
    BIO_set_callback_ex(SSL_get_rbio(ssl), after_read);
    pthread_t thread;
    pthread_create(&thread, NULL, reader, NULL);

    pthread_mutex_lock(&lock);
    while (!read_returned)
        pthread_cond_wait(&changed, &lock);
    pthread_mutex_unlock(&lock);
    close(tls_fd);
    int plain_fd = connect_to(atoi(argv[2]));
    printf("same fd %d\n", plain_fd == tls_fd ? plain_fd : -1);
    const char get[] = "GET /ka HTTP/1.1\r\nHost: localhost\r\n\r\n";
    if (write(plain_fd, get, strlen(get)) != (ssize_t)strlen(get))
        return 1;
    long body = 0;
    int status = plain_response(plain_fd, &body);
    printf("plain %d %ld\n", status, body);
    pthread_mutex_lock(&lock);
    replaced = 1;
    pthread_cond_broadcast(&changed);
    pthread_mutex_unlock(&lock);
    pthread_join(thread, NULL);
    printf("tls %d\n", tls_bytes);
    close(plain_fd);
    return 0;
}
