/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The caches' bookkeeping (replicator/core/lru.h): the list's order under
 * push, touch and unlink; the table's find, insert and remove, with chains
 * of ids that share a bucket, growth that keeps every entry, entries in the
 * table but not on its list (as the chunk cache keeps chunks being loaded),
 * and clearing. A reference model (arrays) checks every step.
 */
#include "lru.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ferry/crypto.h"
#include "ferry/util.h"
#include "tap.h"

/* Table entries: enough for chains of about 40 in 128 buckets. */
#define N 5000u

struct item {
	struct lru_node node;
	unsigned key;
	int cleared;
};

struct litem {
	struct lru_link link;
	unsigned key;
};

/* Keys from oldest to newest, as the list walks them; returns the count. */
static size_t list_keys(const struct lru_list *l, unsigned *out, size_t max)
{
	size_t n = 0;

	for (const struct lru_link *k = l->head.prev; k != &l->head && n < max; k = k->prev)
		out[n++] = lru_container_of(k, struct litem, link)->key;
	return n;
}

static int keys_are(const struct lru_list *l, const unsigned *want, size_t n)
{
	unsigned got[16];

	return l->n == n && list_keys(l, got, ARRAY_SIZE(got)) == n &&
	       memcmp(got, want, n * sizeof(*want)) == 0;
}

static void test_list(void)
{
	struct lru_list l;
	struct litem it[5];

	lru_list_init(&l);
	ok(lru_list_oldest(&l) == NULL && l.n == 0, "an empty list has no oldest");
	for (unsigned i = 0; i < ARRAY_SIZE(it); i++) {
		it[i] = (struct litem){ .key = i };
		ok(!lru_linked(&it[i].link), "a zeroed link is on no list");
		lru_list_push(&l, &it[i].link);
	}
	ok(keys_are(&l, (const unsigned[]){ 0, 1, 2, 3, 4 }, 5), "pushed in order: 0 oldest");
	lru_list_touch(&l, &it[0].link);
	ok(keys_are(&l, (const unsigned[]){ 1, 2, 3, 4, 0 }, 5), "touch moves to the newest end");
	lru_list_touch(&l, &it[0].link);
	ok(keys_are(&l, (const unsigned[]){ 1, 2, 3, 4, 0 }, 5),
	   "touching the newest changes nothing");
	lru_list_touch(&l, &it[3].link);
	ok(keys_are(&l, (const unsigned[]){ 1, 2, 4, 0, 3 }, 5), "touch from the middle");
	lru_list_unlink(&l, &it[2].link);
	ok(!lru_linked(&it[2].link) && keys_are(&l, (const unsigned[]){ 1, 4, 0, 3 }, 4),
	   "unlink from the middle");
	lru_list_unlink(&l, &it[2].link);
	lru_list_touch(&l, &it[2].link);
	ok(!lru_linked(&it[2].link) && keys_are(&l, (const unsigned[]){ 1, 4, 0, 3 }, 4),
	   "unlink and touch of an unlinked link do nothing");
	ok(lru_list_oldest(&l) == &it[1].link, "oldest");
	lru_list_unlink(&l, &it[1].link);
	lru_list_unlink(&l, &it[3].link);
	ok(keys_are(&l, (const unsigned[]){ 4, 0 }, 2), "unlink of both ends");
	lru_list_unlink(&l, &it[4].link);
	lru_list_unlink(&l, &it[0].link);
	ok(lru_list_oldest(&l) == NULL && l.n == 0 && l.head.next == &l.head, "empty again");
	lru_list_push(&l, &it[2].link);
	ok(lru_list_oldest(&l) == &it[2].link && l.n == 1, "a relinked link");
}

static void make_id(unsigned key, struct ferry_id *id)
{
	ferry_sha256(&key, sizeof(key), id);
}

static void on_clear(struct lru_node *n, void *userdata)
{
	lru_container_of(n, struct item, node)->cleared++;
	(*(size_t *)userdata)++;
}

static void test_table(void)
{
	struct lru_table t;
	struct item *it = calloc(N, sizeof(*it));
	struct ferry_id id;
	int all = 1;

	ok(it != NULL, "items");
	if (!it)
		return;
	ok(lru_table_init(&t, 0) == 0 && t.mask == 0, "at least one bucket");
	lru_table_done(&t);
	ok(lru_table_init(&t, 1000) == 0 && t.mask == 1023, "buckets rounded up to a power of two");
	lru_table_done(&t);
	lru_table_done(&t); /* twice is fine */

	ok_r(lru_table_init(&t, 64), "a small table");
	for (unsigned i = 0; i < N; i++) {
		it[i].key = i;
		make_id(i, &it[i].node.id);
		lru_table_insert(&t, &it[i].node);
		/* Every third one is "loading": in the table, not on the list. */
		if (i % 3)
			lru_table_push(&t, &it[i].node);
		if (i == N / 2) {
			ok_r(lru_table_grow(&t), "grown in the middle of the inserts");
			ok(t.mask == 127, "twice the buckets");
		}
	}
	ok(t.n == N && t.list.n == N - DIV_ROUND_UP(N, 3), "counts: table %zu, list %zu", t.n,
	   t.list.n);
	for (unsigned i = 0; i < N; i++) {
		make_id(i, &id);
		all &= lru_table_find(&t, &id) == &it[i].node;
	}
	ok(all, "every id found, after growth, in chains of about 40");
	make_id(N, &id);
	ok(lru_table_find(&t, &id) == NULL, "an absent id is not found");
	ok(lru_table_oldest(&t) == &it[1].node, "the oldest listed one is the first pushed");

	/* Touch: unlisted ones stay off the list; listed ones move. */
	lru_table_touch(&t, &it[0].node);
	ok(!lru_linked(&it[0].node.link) && lru_table_oldest(&t) == &it[1].node,
	   "touching an unlisted node leaves it off the list");
	lru_table_touch(&t, &it[1].node);
	ok(lru_table_oldest(&t) == &it[2].node && t.list.head.next == &it[1].node.link,
	   "touching the oldest makes it the newest");

	/* Remove: listed and unlisted, from anywhere in their chains. */
	all = 1;
	for (unsigned i = 0; i < N; i += 2)
		lru_table_remove(&t, &it[i].node);
	for (unsigned i = 0; i < N; i++) {
		make_id(i, &id);
		all &= lru_table_find(&t, &id) == (i % 2 ? &it[i].node : NULL);
		if (i % 2 == 0)
			all &= !lru_linked(&it[i].node.link) && it[i].node.hnext == NULL;
	}
	ok(all, "removed ones gone, off the list; the others still found");
	size_t listed = 0;
	for (unsigned i = 1; i < N; i += 2)
		listed += i % 3 != 0;
	ok(t.n == N / 2 && t.list.n == listed, "counts after removal: %zu, %zu", t.n, t.list.n);

	/* The list drains oldest first, as a cache evicts. */
	all = 1;
	unsigned last = 0;
	for (struct lru_node *n; (n = lru_table_oldest(&t));) {
		unsigned k = lru_container_of(n, struct item, node)->key;
		/* it[1] was touched to the newest end, the rest go in key order */
		all &= k == 1 ? t.list.n == 1 : k > last;
		if (k != 1)
			last = k;
		lru_table_remove(&t, n);
	}
	ok(all && t.list.n == 0 && t.n == N / 2 - listed, "drained in LRU order");

	/* Ids that share their first 8 bytes share a bucket: a real chain. */
	struct lru_table c;
	struct item same[4] = { 0 };
	ok_r(lru_table_init(&c, 1024), "a table for collisions");
	for (unsigned i = 0; i < ARRAY_SIZE(same); i++) {
		memset(&same[i].node.id, 0xab, sizeof(same[i].node.id));
		same[i].node.id.b[31] = (uint8_t)i;
		lru_table_insert(&c, &same[i].node);
		lru_table_push(&c, &same[i].node);
	}
	lru_table_remove(&c, &same[1].node);
	all = lru_table_find(&c, &same[0].node.id) == &same[0].node &&
	      lru_table_find(&c, &same[1].node.id) == NULL &&
	      lru_table_find(&c, &same[2].node.id) == &same[2].node &&
	      lru_table_find(&c, &same[3].node.id) == &same[3].node;
	ok(all, "a chain of one bucket: removal from its middle");

	size_t cleared = 0;
	lru_table_clear(&c, on_clear, &cleared);
	ok(cleared == 3 && c.n == 0 && c.list.n == 0 && lru_table_oldest(&c) == NULL &&
		   same[0].cleared == 1 && same[1].cleared == 0,
	   "clear hands every node over once and empties the table");
	lru_table_insert(&c, &same[1].node);
	ok(lru_table_find(&c, &same[1].node.id) == &same[1].node && c.n == 1,
	   "a cleared table takes new nodes");
	lru_table_done(&c);

	cleared = 0;
	lru_table_clear(&t, on_clear, &cleared);
	ok(cleared == N / 2 - listed, "clear of the first table: the unlisted rest");
	lru_table_done(&t);
	free(it);
}

int main(void)
{
	test_list();
	test_table();
	return tap_done();
}
