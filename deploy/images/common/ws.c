#include "ws.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char WS_GUID[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/* ------------------------------------------------------- SHA-1 and base64 */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
    uint32_t w[80];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
               (uint32_t)p[4 * i + 2] << 8 | (uint32_t)p[4 * i + 3];
    for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
    for (int i = 0; i < 80; i++) {
        uint32_t f, k;
        if (i < 20) {
            f = (b & c) | (~b & d);
            k = 0x5A827999;
        } else if (i < 40) {
            f = b ^ c ^ d;
            k = 0x6ED9EBA1;
        } else if (i < 60) {
            f = (b & c) | (b & d) | (c & d);
            k = 0x8F1BBCDC;
        } else {
            f = b ^ c ^ d;
            k = 0xCA62C1D6;
        }
        uint32_t t = rol32(a, 5) + f + e + k + w[i];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

static void sha1(const uint8_t *data, size_t len, uint8_t out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    uint8_t block[64];
    size_t i = 0;
    for (; i + 64 <= len; i += 64) sha1_block(h, data + i);
    size_t rest = len - i;
    memset(block, 0, sizeof block);
    memcpy(block, data + i, rest);
    block[rest] = 0x80;
    if (rest >= 56) {
        sha1_block(h, block);
        memset(block, 0, sizeof block);
    }
    uint64_t bits = (uint64_t)len * 8;
    for (int j = 0; j < 8; j++) block[63 - j] = (uint8_t)(bits >> (8 * j));
    sha1_block(h, block);
    for (int j = 0; j < 5; j++) {
        out[4 * j] = (uint8_t)(h[j] >> 24);
        out[4 * j + 1] = (uint8_t)(h[j] >> 16);
        out[4 * j + 2] = (uint8_t)(h[j] >> 8);
        out[4 * j + 3] = (uint8_t)h[j];
    }
}

static void base64(const uint8_t *in, size_t len, char *out) {
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len) v |= in[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = i + 1 < len ? tbl[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? tbl[v & 63] : '=';
    }
    out[o] = '\0';
}

/* Sec-WebSocket-Accept for a Sec-WebSocket-Key of at most 128 bytes. */
static void ws_accept(const char *key, size_t keylen, char out[WS_ACCEPT_LEN + 1]) {
    uint8_t buf[128 + sizeof WS_GUID];
    uint8_t digest[20];
    if (keylen > 128) keylen = 128;
    memcpy(buf, key, keylen);
    memcpy(buf + keylen, WS_GUID, sizeof WS_GUID - 1);
    sha1(buf, keylen + sizeof WS_GUID - 1, digest);
    base64(digest, sizeof digest, out);
}

int ws_handshake_head(char *out, size_t cap, const char *server, const char *key, size_t keylen) {
    char accept[WS_ACCEPT_LEN + 1];
    ws_accept(key, keylen, accept);
    int n = snprintf(out, cap,
                     "HTTP/1.1 101 Switching Protocols\r\nServer: %s\r\n"
                     "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Accept: %s\r\n\r\n",
                     server, accept);
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* ------------------------------------------------------------- frames */

size_t ws_frame_header(uint8_t hdr[10], int opcode, uint64_t len) {
    hdr[0] = (uint8_t)(0x80 | opcode);
    if (len < 126) {
        hdr[1] = (uint8_t)len;
        return 2;
    }
    if (len <= 0xFFFF) {
        hdr[1] = 126;
        hdr[2] = (uint8_t)(len >> 8);
        hdr[3] = (uint8_t)len;
        return 4;
    }
    hdr[1] = 127;
    for (int i = 0; i < 8; i++) hdr[2 + i] = (uint8_t)(len >> (56 - 8 * i));
    return 10;
}

size_t ws_header_len(const uint8_t h[2]) {
    size_t len = 2;
    if ((h[1] & 0x7f) == 126) len += 2;
    if ((h[1] & 0x7f) == 127) len += 8;
    if (h[1] & 0x80) len += 4;
    return len;
}

long ws_parse_header(const uint8_t *p, size_t n, ws_frame_t *f) {
    if (n < 2) return 0;
    if ((p[0] & 0x70) || !(p[1] & 0x80)) /* reserved bits, or an unmasked client frame */
        return -WS_PROTOCOL_ERROR;
    size_t hl = ws_header_len(p);
    if (n < hl) return 0;
    f->fin = (p[0] & 0x80) != 0;
    f->opcode = p[0] & 0x0f;
    f->len = p[1] & 0x7f;
    size_t ext = hl - 6;
    if (ext > 0) {
        f->len = 0;
        for (size_t i = 0; i < ext; i++) f->len = f->len << 8 | p[2 + i];
    }
    memcpy(f->mask, p + hl - 4, 4);
    if (f->opcode >= WS_CLOSE) {
        if (!f->fin || f->len > 125 || f->opcode > WS_PONG) return -WS_PROTOCOL_ERROR;
    } else if (f->opcode > WS_BINARY) {
        return -WS_PROTOCOL_ERROR;
    }
    return (long)hl;
}

void ws_unmask(uint8_t *p, size_t n, const uint8_t mask[4]) {
    for (size_t i = 0; i < n; i++) p[i] ^= mask[i & 3];
}

void ws_close_code(unsigned code, uint8_t out[2]) {
    out[0] = (uint8_t)(code >> 8);
    out[1] = (uint8_t)code;
}

size_t ws_close_answer(const uint8_t *payload, size_t len, uint8_t out[2]) {
    if (len == 1) {
        ws_close_code(WS_PROTOCOL_ERROR, out);
        return 2;
    }
    if (len == 0) return 0;
    memcpy(out, payload, 2);
    return 2;
}

int ws_utf8_valid(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t more;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) {
            more = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i <= more) return 0;
        for (size_t k = 1; k <= more; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (p[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += more + 1;
    }
    return 1;
}

/* ------------------------------------------------------------- messages */

unsigned ws_msg_take(ws_msg_t *m, const ws_frame_t *f, size_t max) {
    if (f->opcode == WS_CONTINUATION) {
        if (!m->opcode) return WS_PROTOCOL_ERROR;
    } else {
        if (m->opcode) return WS_PROTOCOL_ERROR;
        m->opcode = f->opcode;
        m->len = 0;
    }
    if (f->len > max - m->len) return WS_TOO_BIG;
    if (m->len + f->len > m->cap) {
        size_t ncap = m->cap ? m->cap : 4096;
        while (ncap < m->len + f->len) ncap *= 2;
        uint8_t *data = realloc(m->data, ncap);
        if (!data) return WS_INTERNAL_ERROR;
        m->data = data;
        m->cap = ncap;
    }
    return 0;
}

void ws_msg_reset(ws_msg_t *m) {
    m->opcode = 0;
    m->len = 0;
    if (m->cap > (1u << 20)) ws_msg_free(m);
}

void ws_msg_free(ws_msg_t *m) {
    free(m->data);
    m->data = NULL;
    m->cap = 0;
    m->len = 0;
}
