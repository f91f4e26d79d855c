/*
 * A small, strict HTTP/1.x request-head parser for examples/http-server.c (RFC 9112).
 *
 * It reads only the bytes it is given, never past them, copies nothing and allocates nothing. What it
 * does not understand it rejects: the server answers 400 and closes the connection.
 */
#ifndef HTTP_PARSE_H
#define HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>

enum {
    HTTP_INCOMPLETE = 0, /* the head has not all arrived: read more */
    HTTP_BAD = -1,       /* malformed, or something this parser does not take: answer 400 */
};

enum http_expect {
    HTTP_EXPECT_NONE,     /* no Expect field */
    HTTP_EXPECT_CONTINUE, /* Expect: 100-continue: the client waits for "100 Continue" to send the body */
    HTTP_EXPECT_OTHER,    /* an expectation this server cannot meet: answer 417 */
};

typedef struct http_request {
    const char *method, *target; /* inside the buffer, not NUL-terminated */
    size_t method_len, target_len;
    int minor_version;           /* HTTP/1.0 or HTTP/1.1 */
    size_t content_length;       /* body bytes that follow the head */
    bool keep_alive;             /* the connection stays open after the response */
    enum http_expect expect;     /* HTTP/1.1 only: HTTP/1.0 requests get HTTP_EXPECT_NONE */
} http_request;

/* Parse the request head at the start of buf[0, len). Returns its length in bytes (> 0, the body is
 * not included; empty lines before the request line are, RFC 9112 2.2) and fills *req; HTTP_INCOMPLETE
 * if more bytes are needed; HTTP_BAD if it is malformed (bad request line, bad header, a bare CR or LF,
 * a bad or repeated Content-Length, Transfer-Encoding, a body larger than max_body, two Host fields, or
 * none in HTTP/1.1). keep_alive is false when any Connection option is "close", in one field or more;
 * else true for HTTP/1.1, and for HTTP/1.0 with a "keep-alive" option. */
long http_parse_request(const char *buf, size_t len, size_t max_body, http_request *req);

#endif
