/*
 * The request-head parser (see http-parse.h). One pass over the bytes; every read is checked against the
 * end of the buffer first. Running out of bytes in a head that is valid so far means HTTP_INCOMPLETE.
 */
#include "http-parse.h"

#include <string.h>

/* token characters (RFC 9110, 5.6.2) */
static bool is_tchar(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* a field value's characters: visible, space, tab, and bytes past ASCII (obs-text) */
static bool is_value_char(unsigned char c)
{
    return c == ' ' || c == '\t' || (c > 0x20 && c != 0x7f);
}

static bool equals_nocase(const char *s, size_t n, const char *word)
{
    size_t i = 0;
    for (; i < n && word[i]; i++) {
        char a = s[i], b = word[i];
        if (a >= 'A' && a <= 'Z')
            a = (char)(a - 'A' + 'a');
        if (a != b)
            return false;
    }
    return i == n && word[i] == '\0';
}

/* Expect CRLF at *p. 1: consumed; 0: the buffer ends first; -1: something else is there. */
static int crlf(const char **p, const char *end)
{
    if (*p == end)
        return 0;
    if (**p != '\r')
        return -1;
    if (*p + 1 == end)
        return 0;
    if ((*p)[1] != '\n')
        return -1;
    *p += 2;
    return 1;
}

/* Does the comma-separated list val[0, vlen) have a member equal (ignoring case) to word? If it has any
 * other member, *other is set. */
static bool list_has(const char *val, size_t vlen, const char *word, bool *other)
{
    bool found = false;
    size_t i = 0;
    while (i < vlen) {
        while (i < vlen && (val[i] == ' ' || val[i] == '\t' || val[i] == ','))
            i++;
        size_t start = i;
        while (i < vlen && val[i] != ',' && val[i] != ' ' && val[i] != '\t')
            i++;
        if (i == start)
            continue;
        if (equals_nocase(val + start, i - start, word))
            found = true;
        else
            *other = true;
    }
    return found;
}

/* What the head's fields say, as far as this server cares; gathered over the fields, decided at the end. */
struct fields {
    bool seen_length;
    int hosts;
    bool close, keep_alive; /* Connection options */
    bool expect_continue, expect_other;
};

static bool apply_field(const char *name, size_t nlen, const char *val, size_t vlen, size_t max_body,
                        struct fields *f, http_request *req)
{
    bool other = false;
    if (equals_nocase(name, nlen, "content-length")) {
        if (f->seen_length || vlen == 0)
            return false;
        size_t n = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (val[i] < '0' || val[i] > '9')
                return false;
            n = n * 10 + (size_t)(val[i] - '0');
            if (n > max_body)
                return false;
        }
        f->seen_length = true;
        req->content_length = n;
    } else if (equals_nocase(name, nlen, "transfer-encoding")) {
        return false; /* chunked bodies are not taken */
    } else if (equals_nocase(name, nlen, "host")) {
        f->hosts++;
    } else if (equals_nocase(name, nlen, "connection")) {
        f->close |= list_has(val, vlen, "close", &other);
        f->keep_alive |= list_has(val, vlen, "keep-alive", &other);
    } else if (equals_nocase(name, nlen, "expect")) {
        f->expect_continue |= list_has(val, vlen, "100-continue", &f->expect_other);
    }
    return true;
}

long http_parse_request(const char *buf, size_t len, size_t max_body, http_request *req)
{
    const char *p = buf, *end = buf + len;
    memset(req, 0, sizeof *req);

    /* empty lines before the request line are ignored (RFC 9112 2.2) */
    int r;
    while ((r = crlf(&p, end)) == 1)
        ;
    if (r == 0)
        return HTTP_INCOMPLETE;

    /* request-line = method SP request-target SP HTTP-version CRLF */
    req->method = p;
    while (p < end && is_tchar((unsigned char)*p))
        p++;
    if (p == end)
        return HTTP_INCOMPLETE;
    req->method_len = (size_t)(p - req->method);
    if (req->method_len == 0 || *p++ != ' ')
        return HTTP_BAD;
    req->target = p;
    while (p < end && (unsigned char)*p > 0x20 && (unsigned char)*p < 0x7f)
        p++;
    if (p == end)
        return HTTP_INCOMPLETE;
    req->target_len = (size_t)(p - req->target);
    if (req->target_len == 0 || *p++ != ' ')
        return HTTP_BAD;
    static const char version[] = "HTTP/1.";
    for (size_t i = 0; i < sizeof version - 1; i++, p++) {
        if (p == end)
            return HTTP_INCOMPLETE;
        if (*p != version[i])
            return HTTP_BAD;
    }
    if (p == end)
        return HTTP_INCOMPLETE;
    if (*p != '0' && *p != '1')
        return HTTP_BAD;
    req->minor_version = *p++ - '0';
    r = crlf(&p, end);
    if (r <= 0)
        return r == 0 ? HTTP_INCOMPLETE : HTTP_BAD;

    /* field-line = field-name ":" OWS field-value OWS CRLF, until an empty line */
    struct fields f = {0};
    for (;;) {
        r = crlf(&p, end);
        if (r == 1)
            break;
        if (r == 0)
            return HTTP_INCOMPLETE;
        const char *name = p;
        while (p < end && is_tchar((unsigned char)*p))
            p++;
        if (p == end)
            return HTTP_INCOMPLETE;
        size_t nlen = (size_t)(p - name);
        if (nlen == 0 || *p++ != ':') /* also refuses space before the colon and folded lines */
            return HTTP_BAD;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *val = p;
        while (p < end && is_value_char((unsigned char)*p))
            p++;
        const char *val_end = p;
        while (val_end > val && (val_end[-1] == ' ' || val_end[-1] == '\t'))
            val_end--;
        r = crlf(&p, end);
        if (r <= 0)
            return r == 0 ? HTTP_INCOMPLETE : HTTP_BAD;
        if (!apply_field(name, nlen, val, (size_t)(val_end - val), max_body, &f, req))
            return HTTP_BAD;
    }
    if (f.hosts > 1 || (req->minor_version == 1 && f.hosts == 0))
        return HTTP_BAD; /* RFC 9112 3.2 */
    req->keep_alive = !f.close && (req->minor_version == 1 || f.keep_alive);
    if (req->minor_version == 1)
        req->expect = f.expect_other ? HTTP_EXPECT_OTHER : f.expect_continue ? HTTP_EXPECT_CONTINUE : HTTP_EXPECT_NONE;
    return (long)(p - buf);
}
