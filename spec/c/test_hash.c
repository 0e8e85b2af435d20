/* test_hash.c - block, chain and lineage hashes against the Dynamo vectors
 * (tokens-hashing.md 5.1 and 5.3, layout B). */
#include <kvbm.h>

#include "tap.h"

struct row {
  uint64_t pos, block_hash, seq_hash, plh_hi, plh_lo;
  unsigned mode;
  uint64_t parent_fragment;
  const char *display;
};

struct table {
  const char *name;
  unsigned ntokens, block_size;
  uint64_t salt;
  unsigned nrows;
  struct row rows[4];
};

/* Tokens 0..ntokens-1. */
static const struct table tables[] = {
    {"B1", 18, 4, 1337, 4,
     {{0, 0x7ee2cbedc694ab46, 0x7ee2cbedc694ab46, 0x001fb8b2fb71a52a, 0xd180000000000000, 0, 0x0, "0:NDxEuLnxnUD"},
      {1, 0xa8416cfd935bdb13, 0x83fb702f20e2ad65, 0x0060fedc0bc838ab, 0x5962cbedc694ab46, 0, 0x22cbedc694ab46, "1:P5PmJLYPXS4:12KUtXWCDJu"},
      {2, 0x0f1aa342314b9384, 0xebe58e326790467b, 0x00baf9638c99e411, 0x9efb702f20e2ad65, 0, 0x3b702f20e2ad65, "2:gTVd7yoDHqU:13FeDVA9uwA"},
      {3, 0xde642b4b4e66ec34, 0xe9036fce74242bb5, 0x00fa40dbf39d090a, 0xed658e326790467b, 0, 0x258e326790467b, "3:fyXHMvUgj9N:12RYbBFgSWn"}}},
    {"B2", 18, 4, 0, 4,
     {{0, 0xa1d0bd893c9531ac, 0xa1d0bd893c9531ac, 0x0028742f624f254c, 0x6b00000000000000, 0, 0x0, "0:U4p6aEVXZkX"},
      {1, 0xf0bf80b0226b6c14, 0x485a98a2c350d61a, 0x005216a628b0d435, 0x8690bd893c9531ac, 0, 0x10bd893c9531ac, "1:D6vZFvcKECh:1do5AYViE7"},
      {2, 0x9e4292f7184dea90, 0x796623d02e0e6f32, 0x009e5988f40b839b, 0xcc9a98a2c350d61a, 0, 0x1a98a2c350d61a, "2:MJitXpMWCLq:121TW6wvo85"},
      {3, 0x7767b6b61c483163, 0x180a2c7a40261766, 0x00c6028b1e900985, 0xd9a623d02e0e6f32, 0, 0x2623d02e0e6f32, "3:52DWHh4Tfi5:12Sq6SZwy9s"}}},
    {"B3", 70, 16, 1337, 4,
     {{0, 0xd47a8f41c833328a, 0xd47a8f41c833328a, 0x00351ea3d0720ccc, 0xa280000000000000, 0, 0x0, "0:cYJyuuRniyF"},
      {1, 0xd43939178abd00db, 0xbf15dffb16447f38, 0x006fc577fec5911f, 0xce3a8f41c833328a, 0, 0x3a8f41c833328a, "1:YxmZHYFG9Vh:13DiD58MASD"},
      {2, 0x4cc8f942aaf401a2, 0xa4dda066f3c1e1a0, 0x00a9376819bcf078, 0x6815dffb16447f38, 0, 0x15dffb16447f38, "2:UaQSMWoTjPm:1q5dMr41Pu"},
      {3, 0xcf2d99a33cc42682, 0x35f7c0d119848950, 0x00cd7df034466122, 0x541da066f3c1e1a0, 0, 0x1da066f3c1e1a0, "3:A2ZCSkXziKH:1287p2Px44o"}}},
    {"B4", 70, 16, 0, 4,
     {{0, 0x79c2079c74a8ee4d, 0x79c2079c74a8ee4d, 0x001e7081e71d2a3b, 0x9340000000000000, 0, 0x0, "0:MNCrhMANbp8"},
      {1, 0x0de75b0e004b90fe, 0x67541a8adfddce4c, 0x0059d506a2b7f773, 0x9302079c74a8ee4d, 0, 0x2079c74a8ee4d, "1:JHR91ruTgq1:15TkZy54zQ"},
      {2, 0x290d9b2bb8046de9, 0xb626e17dfe7f3ace, 0x00ad89b85f7f9fce, 0xb3941a8adfddce4c, 0, 0x141a8adfddce4c, "2:XU6t5ipLWMj:1mBq1rnQTM"},
      {3, 0x9309a8d978ce032d, 0x7b837311ed733b4e, 0x00dee0dcc47b5cce, 0xd3a6e17dfe7f3ace, 0, 0x26e17dfe7f3ace, "3:MfEexnrsHph:12UTYonZqfb"}}},
    {"B5", 12, 4, 42, 3,
     {{0, 0x85fc4b7513958f63, 0x85fc4b7513958f63, 0x00217f12dd44e563, 0xd8c0000000000000, 0, 0x0, "0:PQpzX4wppYi"},
      {1, 0x35c7da70a8c7504f, 0xf82388d452ed4af9, 0x007e08e23514bb52, 0xbe7c4b7513958f63, 0, 0x3c4b7513958f63, "1:iWFvQbsQRiQ:13HXQbvbzWn"},
      {2, 0xe8cc884e2ce4ca1e, 0x0dbbbc8db1cfb74c, 0x00836eef236c73ed, 0xd32388d452ed4af9, 0, 0x2388d452ed4af9, "2:3JENw7E2N3m:12M6xQo5dN8"}}},
};

static void check_table(const struct table *t) {
  uint32_t toks[128];
  kvbm_sequence *s;
  for (unsigned i = 0; i < t->ntokens; i++) toks[i] = i;
  if (kvbm_sequence_new(NULL, t->block_size, t->salt, &s) < 0 ||
      kvbm_sequence_extend(s, toks, t->ntokens, NULL, NULL) < 0) {
    ok(0, "%s: build sequence", t->name);
    return;
  }
  ok(kvbm_sequence_blocks(s) == t->nrows, "%s: %u full blocks", t->name, t->nrows);
  for (unsigned i = 0; i < t->nrows && i < kvbm_sequence_blocks(s); i++) {
    const struct row *r = &t->rows[i];
    kvbm_hash h = kvbm_sequence_hashes(s)[i];
    char buf[KVBM_HASH_STRLEN];
    is_u64(kvbm_sequence_block_hash(s, i), r->block_hash, "%s[%u] block hash", t->name, i);
    is_u64(kvbm_sequence_seq_hash(s, i), r->seq_hash, "%s[%u] sequence hash", t->name, i);
    is_u64(h.hi, r->plh_hi, "%s[%u] PLH high word", t->name, i);
    is_u64(h.lo, r->plh_lo, "%s[%u] PLH low word", t->name, i);
    ok(kvbm_hash_mode(h) == r->mode, "%s[%u] mode", t->name, i);
    is_u64(kvbm_hash_position(h), r->pos, "%s[%u] position", t->name, i);
    is_u64(kvbm_hash_parent_fragment(h), r->parent_fragment, "%s[%u] parent fragment", t->name, i);
    ok(kvbm_hash_format(h, buf, sizeof buf) > 0, "%s[%u] format", t->name, i);
    is_str(buf, r->display, "%s[%u] Display", t->name, i);
  }
  kvbm_sequence_free(s);
}

/* Long chain: block_size 1, tokens[i] = i, salt 0, walked to 2^24-1. */
static void check_long_chain(void) {
  static const struct row rows[] = {
      {0, 0x48b2c92616fc193d, 0x48b2c92616fc193d, 0x00122cb24985bf06, 0x4f40000000000000, 0, 0x0, "0:DAGPhgXQiag"},
      {1, 0xdb02334e96d65708, 0x17da1ae5a8aef1a2, 0x0045f686b96a2bbc, 0x68b2c92616fc193d, 0, 0x32c92616fc193d, "1:4zPrU9kGKX7:12vdCAA9dgg"},
      {255, 0x577e3e0c0a1e19a8, 0x320694156bdaf65a, 0x3fcc81a5055af6bd, 0x96a603beb292c009, 0, 0x2603beb292c009, "255:9NK6Kai9MK7:12SZ8EcN6cG"},
      {256, 0xac9b6337f1f1fe57, 0xe7469b89d3fc9816, 0x404039d1a6e274ff, 0x260594156bdaf65a, 1, 0x14156bdaf65a, "256:fgfaJhZsoJu:11B14ecVSR"},
      {257, 0x01f9e95b509568fe, 0x33e47d788edd6487, 0x40404cf91f5e23b7, 0x5921db89d3fc9816, 1, 0x1b89d3fc9816, "257:9gRWkVknepv:11EiNbCECD"},
      {65535, 0xe657849cfde9c58f, 0x64d3fdab242c241d, 0x7fffd934ff6ac90b, 0x09077e64509524cf, 1, 0x3e64509524cf, "65535:HsAD6txkwAt:11Y52CRc6r"},
      {65536, 0x0a0b5ceb702cac74, 0xa7e4199c9c97d7ea, 0x80400029f9066727, 0x25f5faab242c241d, 2, 0x2b242c241d, "65536:V5kgdyHkMDj:1115sJV5De"},
      {65537, 0x71940a272a674686, 0x77d3c08bce6da54d, 0x8040005df4f022f3, 0x9b69535c9c97d7ea, 2, 0x1c9c97d7ea, "65537:M3UTvssopXN:1114EE3K77"},
      {16777215, 0x676ca66c16a01367, 0x5fd2d03ef466a45e, 0xbfffffd7f4b40fbd, 0x19a91790d31cdc78, 2, 0x10d31cdc78, "16777215:H2cFw5dkSgD:1112u6VN1M"},
  };
  size_t next = 0, nrows = sizeof rows / sizeof rows[0];
  kvbm_hash h = {0, 0};
  for (uint32_t i = 0; i <= KVBM_MAX_POSITION && next < nrows; i++) {
    uint64_t bh = kvbm_block_hash(&i, 1, 0);
    int rc = i == 0 ? kvbm_hash_new(bh, 0, 0, 0, &h) : kvbm_hash_extend(h, bh, &h);
    if (rc < 0) break;
    if (i != rows[next].pos) continue;
    const struct row *r = &rows[next++];
    char buf[KVBM_HASH_STRLEN];
    is_u64(bh, r->block_hash, "chain[%u] block hash", i);
    is_u64(kvbm_hash_current(h), r->seq_hash, "chain[%u] sequence hash", i);
    ok(h.hi == r->plh_hi && h.lo == r->plh_lo, "chain[%u] PLH", i);
    ok(kvbm_hash_mode(h) == r->mode, "chain[%u] mode %u", i, r->mode);
    is_u64(kvbm_hash_parent_fragment(h), r->parent_fragment, "chain[%u] parent fragment", i);
    (void)kvbm_hash_format(h, buf, sizeof buf);
    is_str(buf, r->display, "chain[%u] Display", i);
  }
  ok(next == nrows, "long chain reached 2^24-1");
  kvbm_hash beyond;
  ok(kvbm_hash_extend(h, 1, &beyond) == KVBM_EPOSITION_LIMIT, "extend past 2^24-1 is an error");
}

static void check_literals(void) {
  const uint32_t a[] = {1, 2, 3, 4}, b[] = {5, 6, 7, 8}, c[] = {9, 10, 11, 12};
  uint64_t h14 = kvbm_block_hash(a, 4, 1337), h58 = kvbm_block_hash(b, 4, 1337),
           h912 = kvbm_block_hash(c, 4, 1337);
  is_u64(h14, UINT64_C(14643705804678351452), "HASH_1_4");
  is_u64(h58, UINT64_C(16777012769546811212), "HASH_5_8");
  is_u64(h912, UINT64_C(483935686894639516), "HASH_9_12");
  uint64_t s58 = kvbm_chain_hash(h14, h58);
  is_u64(s58, UINT64_C(4945711292740353085), "SEQ_HASH_5_8");
  is_u64(kvbm_chain_hash(s58, h912), UINT64_C(12583592247330656132), "SEQ_HASH_9_12");
}

static void check_structure(void) {
  const uint64_t c = 0x1234567890ABCDEF, p = 0xFEDCBA9876543210;
  const struct { uint64_t pos; unsigned mode, r; } cases[] = {
      {100, 0, 54}, {1000, 1, 46}, {100000, 2, 38}, {255, 0, 54},
      {256, 1, 46}, {65535, 1, 46}, {65536, 2, 38}};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    kvbm_hash h;
    ok(kvbm_hash_new(c, 1, p, cases[i].pos, &h) == 0 && kvbm_hash_mode(h) == cases[i].mode &&
           kvbm_hash_position(h) == cases[i].pos && kvbm_hash_current(h) == c &&
           kvbm_hash_parent_fragment(h) == (p & ((UINT64_C(1) << cases[i].r) - 1)),
       "PLH::new(c, p, %" PRIu64 ") fields", cases[i].pos);
  }
  kvbm_hash h, p255, p256;
  ok(kvbm_hash_new(c, 1, p, KVBM_MAX_POSITION + 1, &h) == KVBM_EPOSITION_LIMIT,
     "position 2^24 is an error, not a crash");
  (void)kvbm_hash_new(0x1234567890ABCDEF, 1, p, 255, &p255);
  (void)kvbm_hash_new(0xABCDEF0123456789, 1, 0x1234567890ABCDEF, 256, &p256);
  ok(kvbm_hash_parent_fragment(p256) == kvbm_hash_parent_fragment_for_child(p255, 256),
     "parent fragment across the 255 -> 256 boundary");
  kvbm_hash a, b, cc;
  (void)kvbm_hash_new(0x30, 0, 0, 0, &a);
  (void)kvbm_hash_new(0x10, 1, 0x30, 2, &b);
  (void)kvbm_hash_new(0x20, 1, 0x30, 2, &cc);
  ok(kvbm_hash_cmp(a, b) < 0 && kvbm_hash_cmp(b, cc) < 0 && kvbm_hash_cmp(cc, cc) == 0,
     "Ord: position, then current");
  char buf[KVBM_HASH_STRLEN];
  const struct { uint64_t cur; int has_parent; uint64_t parent, pos, hi, lo; const char *display; } misc[] = {
      {0x123456789abcdef0, 0, 0, 0, 0x00048d159e26af37, 0xbc00000000000000, "0:43c9JGph3DZ"},
      {0xabcdef0123456789, 1, 0x123456789abcdef0, 5, 0x016af37bc048d159, 0xe27456789abcdef0, "5:VjieuTM37VA:12z33k5p6QF"},
      {0xffffffffffffffff, 1, 0xdeadbeef, 255, 0x3fffffffffffffff, 0xffc00000deadbeef, "255:jpXCZedGfVQ:11116h8cQN"},
  };
  for (size_t i = 0; i < sizeof misc / sizeof misc[0]; i++) {
    (void)kvbm_hash_new(misc[i].cur, misc[i].has_parent, misc[i].parent, misc[i].pos, &h);
    ok(h.hi == misc[i].hi && h.lo == misc[i].lo, "hand-made PLH %zu", i);
    (void)kvbm_hash_format(h, buf, sizeof buf);
    is_str(buf, misc[i].display, "hand-made PLH %zu Display", i);
  }
  unsigned char bytes[16];
  kvbm_hash_to_bytes(h, bytes);
  kvbm_hash back = kvbm_hash_from_bytes(bytes);
  ok(bytes[0] == 0x3f && bytes[15] == 0xef && back.hi == h.hi && back.lo == h.lo,
     "16-byte big-endian round trip");
  kvbm_hash bad = {UINT64_C(3) << 62, 0};
  ok(!kvbm_hash_valid(bad) && kvbm_hash_format(bad, buf, sizeof buf) == KVBM_EBAD_HASH,
     "mode 11 is rejected");
  ok(kvbm_hash_format(h, buf, 4) == KVBM_EINVAL, "format into a short buffer fails cleanly");
}

int main(void) {
  check_literals();
  for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) check_table(&tables[i]);
  check_structure();
  check_long_chain();
  return tap_done();
}
