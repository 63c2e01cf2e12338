/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * Fuzz target for the Azure List Blobs page parser (blobs-azure.c, over
 * libxml2 as blobs-xml.h sets it up): the body of a listing comes from the
 * network and must be refused cleanly, adding nothing, or parsed whole.
 * Each input is parsed twice, under the empty prefix and under "a/": the
 * two must agree on the outcome and on the next marker, and the second
 * listing must be exactly the "a/" entries of the first, stripped, in the
 * same order with the same sizes; the next marker is at most
 * BLOBS_LIST_MARKER_MAX bytes, and a listing bounded below the page's
 * entries refuses the page whole (-E2BIG). The corpus holds XML edge cases too:
 * entities (internal, external, exponential), CDATA, deep nesting, huge
 * names, other encodings.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blobs-internal.h"
#include "ferry/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void list_done(struct blob_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	*l = (struct blob_list){ 0 };
}

/* The same page into a listing that takes at most 2 entries: the same
 * result when the page holds that few of ours, else -E2BIG and nothing. */
static void check_bounded(const char *xml, size_t size, const struct blob_list *all)
{
	_cleanup_(list_done) struct blob_list two = { .max = 2 };
	_cleanup_free_ char *m = NULL;
	int r = azure_list_parse("", xml, size, &two, &m);
	if (r == -ENOMEM)
		return;
	if (all->n > 2 ? r != -E2BIG || two.n || m : r != 0 || two.n != all->n)
		abort();
}

static void check(const char *xml, size_t size)
{
	_cleanup_(list_done) struct blob_list all = { 0 }, sub = { 0 };
	_cleanup_free_ char *m_all = NULL, *m_sub = NULL;
	int r_all = azure_list_parse("", xml, size, &all, &m_all);
	int r_sub = azure_list_parse("a/", xml, size, &sub, &m_sub);
	if (r_all == -ENOMEM || r_sub == -ENOMEM)
		return;
	if (r_all < 0 || r_sub < 0) {
		if (r_all != -EBADMSG || r_sub != -EBADMSG || m_all || m_sub || all.n || sub.n)
			abort();
		return;
	}
	if (!m_all || !m_sub || strcmp(m_all, m_sub) != 0 || strlen(m_all) > BLOBS_LIST_MARKER_MAX)
		abort();
	check_bounded(xml, size, &all);
	size_t j = 0;
	for (size_t i = 0; i < all.n; i++) {
		const struct blob_entry *e = &all.v[i];
		if (!e->name)
			abort();
		if (strncmp(e->name, "a/", 2) != 0)
			continue;
		if (j >= sub.n || strcmp(sub.v[j].name, e->name + 2) != 0 ||
		    sub.v[j].size != e->size)
			abort();
		j++;
	}
	if (j != sub.n)
		abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* An exact-size copy, so that a read past the end is caught even when
	 * the caller's buffer has slack (the replay's ends in a NUL). */
	_cleanup_free_ char *xml = malloc(size ? size : 1);
	if (!xml)
		return 0;
	memcpy(xml, data, size);
	check(xml, size);
	return 0;
}
