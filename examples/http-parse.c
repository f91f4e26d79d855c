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

/* What the head's fields say, as far as this server cares. */
static bool apply_field(const char *name, size_t nlen, const char *val, size_t vlen, size_t max_body,
                        bool *seen_length, http_request *req)
{
    if (equals_nocase(name, nlen, "content-length")) {
        if (*seen_length || vlen == 0)
            return false;
        size_t n = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (val[i] < '0' || val[i] > '9')
                return false;
            n = n * 10 + (size_t)(val[i] - '0');
            if (n > max_body)
                return false;
        }
        *seen_length = true;
        req->content_length = n;
    } else if (equals_nocase(name, nlen, "transfer-encoding")) {
        return false; /* chunked bodies are not taken */
    } else if (equals_nocase(name, nlen, "connection")) {
        /* a comma-separated list of options */
        size_t i = 0;
        while (i < vlen) {
            while (i < vlen && (val[i] == ' ' || val[i] == '\t' || val[i] == ','))
                i++;
            size_t start = i;
            while (i < vlen && val[i] != ',' && val[i] != ' ' && val[i] != '\t')
                i++;
            if (equals_nocase(val + start, i - start, "close"))
                req->keep_alive = false;
            else if (equals_nocase(val + start, i - start, "keep-alive"))
                req->keep_alive = true;
        }
    }
    return true;
}

long http_parse_request(const char *buf, size_t len, size_t max_body, http_request *req)
{
    const char *p = buf, *end = buf + len;
    memset(req, 0, sizeof *req);

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
    int r = crlf(&p, end);
    if (r <= 0)
        return r == 0 ? HTTP_INCOMPLETE : HTTP_BAD;
    req->keep_alive = req->minor_version == 1;

    /* field-line = field-name ":" OWS field-value OWS CRLF, until an empty line */
    bool seen_length = false;
    for (;;) {
        r = crlf(&p, end);
        if (r == 1)
            return (long)(p - buf);
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
        if (!apply_field(name, nlen, val, (size_t)(val_end - val), max_body, &seen_length, req))
            return HTTP_BAD;
    }
}
