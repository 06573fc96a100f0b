/* HTTP/1.1 over sendmmsg/recvmmsg, for netsonde's capture tests (loopback only).
 *
 *   mmsg_client PORT PATH
 *
 * Sends "GET PATH" with Connection: close as two messages of one sendmmsg(), then reads the
 * response with recvmmsg() (two buffers, MSG_WAITFORONE) until the server closes. Python has
 * no binding for these syscalls, hence C. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
    char line[512], rest[] = "Host: 127.0.0.1\r\nConnection: close\r\n\r\n";
    snprintf(line, sizeof line, "GET %s HTTP/1.1\r\n", argv[2]);
    struct iovec out[2] = {{line, strlen(line)}, {rest, strlen(rest)}};
    struct mmsghdr send[2] = {0};
    send[0].msg_hdr.msg_iov = &out[0];
    send[0].msg_hdr.msg_iovlen = 1;
    send[1].msg_hdr.msg_iov = &out[1];
    send[1].msg_hdr.msg_iovlen = 1;
    if (sendmmsg(fd, send, 2, 0) != 2) {
        perror("sendmmsg");
        return 1;
    }
    static char a[64], b[65536];
    for (;;) {
        struct iovec in[2] = {{a, sizeof a}, {b, sizeof b}};
        struct mmsghdr recv[2] = {0};
        recv[0].msg_hdr.msg_iov = &in[0];
        recv[0].msg_hdr.msg_iovlen = 1;
        recv[1].msg_hdr.msg_iov = &in[1];
        recv[1].msg_hdr.msg_iovlen = 1;
        int n = recvmmsg(fd, recv, 2, MSG_WAITFORONE, NULL);
        if (n <= 0 || recv[0].msg_len == 0)
            break;
    }
    close(fd);
    return 0;
}
