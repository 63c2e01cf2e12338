/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * The XML reader of the object-store backends (blobs-azure.c, blobs-s3.c):
 * listing pages and error bodies come from the network and are parsed by
 * libxml2, locked down to what those bodies need. No network, no DTD (a
 * DOCTYPE is refused as soon as it starts, so no entity is ever declared,
 * let alone expanded, and nothing external is loaded), libxml2's own limits
 * on depth, name and text length (no XML_PARSE_HUGE), a cap on the body
 * size, UTF-8 only, and nothing printed. Private to the core: libxml2 types
 * stay out of include/ferry/, and out of blobs-internal.h, which the tests
 * include without libxml2's include path.
 */
#pragma once

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

#include "ferry/util.h"

/* A listing page holds at most 5000 (Azure) or 1000 (S3) entries: a few MiB. */
#define BLOBS_XML_MAX (64u * 1024u * 1024u)

DEFINE_TRIVIAL_CLEANUP_FUNC(xmlDoc *, xmlFreeDoc)
DEFINE_TRIVIAL_CLEANUP_FUNC(xmlParserCtxt *, xmlFreeParserCtxt)

/* SAX hook for <!DOCTYPE: stop before the internal subset is read. */
static inline void blobs_xml_refuse_dtd(void *ctx, const xmlChar *name, const xmlChar *external_id,
					const xmlChar *system_id)
{
	xmlStopParser(ctx);
}

/* Errors become -EBADMSG, never a line on stderr. */
static inline void blobs_xml_quiet(void *ctx, xmlError *error)
{
}

/*
 * Parses len bytes at buf (not NUL-terminated) into a tree. -EBADMSG for
 * anything but well-formed UTF-8 XML without a DOCTYPE and without NUL
 * bytes, of at most BLOBS_XML_MAX bytes; -ENOMEM.
 */
static inline int blobs_xml_parse(const char *buf, size_t len, xmlDoc **ret)
{
	if (!buf || len == 0 || len > BLOBS_XML_MAX || len > INT_MAX)
		return -EBADMSG;
	/* libxml2 would take a NUL for the end of the input and ignore the rest. */
	if (memchr(buf, 0, len))
		return -EBADMSG;
	/* Once, before any parse, whichever thread lists first. */
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	pthread_once(&once, xmlInitParser);
	_cleanup_(xmlFreeParserCtxtp) xmlParserCtxt *ctxt = xmlNewParserCtxt();
	if (!ctxt || !ctxt->sax)
		return -ENOMEM;
	ctxt->sax->internalSubset = blobs_xml_refuse_dtd;
	ctxt->sax->serror = blobs_xml_quiet;
	/* No NOENT (entities stay unexpanded), no DTDLOAD, no HUGE. The
	 * services send UTF-8; IGNORE_ENC keeps a declared encoding from
	 * switching to another decoder. */
	int opts = XML_PARSE_NONET | XML_PARSE_NOERROR | XML_PARSE_NOWARNING | XML_PARSE_IGNORE_ENC;
	xmlDoc *doc = xmlCtxtReadMemory(ctxt, buf, (int)len, NULL, "UTF-8", opts);
	if (!doc)
		return ctxt->errNo == XML_ERR_NO_MEMORY ? -ENOMEM : -EBADMSG;
	/* A stopped parser records no further errors: it may still look
	 * well-formed, so the stop itself is the verdict. */
	if (!ctxt->wellFormed || ctxt->errNo == XML_ERR_USER_STOP || doc->intSubset ||
	    doc->extSubset || !xmlDocGetRootElement(doc)) {
		xmlFreeDoc(doc);
		return -EBADMSG;
	}
	*ret = doc;
	return 0;
}

/* 1 when n is an element of that local name (namespaces are not checked). */
static inline int blobs_xml_is(const xmlNode *n, const char *name)
{
	return n && n->type == XML_ELEMENT_NODE && xmlStrEqual(n->name, (const xmlChar *)name);
}

/* 1 when element n has the attribute name, of exactly that value. */
static inline int blobs_xml_attr_is(const xmlNode *n, const char *name, const char *value)
{
	xmlChar *v = xmlGetProp(n, (const xmlChar *)name);
	int is = v && xmlStrEqual(v, (const xmlChar *)value);
	xmlFree(v);
	return is;
}

/* The one child element of parent called name: -ENOENT when there is
 * none, -EBADMSG when there are several. */
static inline int blobs_xml_child(const xmlNode *parent, const char *name, xmlNode **ret)
{
	xmlNode *found = NULL;
	for (xmlNode *c = parent->children; c; c = c->next) {
		if (!blobs_xml_is(c, name))
			continue;
		if (found)
			return -EBADMSG;
		found = c;
	}
	if (!found)
		return -ENOENT;
	*ret = found;
	return 0;
}

/* The character data of a leaf element (text and CDATA; comments and
 * processing instructions skipped), malloc'd. -EBADMSG when it holds an
 * element or an entity reference. */
static inline int blobs_xml_text(const xmlNode *n, char **ret)
{
	size_t len = 0;
	for (const xmlNode *c = n->children; c; c = c->next) {
		if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE)
			len += c->content ? strlen((const char *)c->content) : 0;
		else if (c->type != XML_COMMENT_NODE && c->type != XML_PI_NODE)
			return -EBADMSG;
	}
	char *s = malloc(len + 1), *p = s;
	if (!s)
		return -ENOMEM;
	for (const xmlNode *c = n->children; c; c = c->next)
		if ((c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) && c->content) {
			size_t l = strlen((const char *)c->content);
			memcpy(p, c->content, l);
			p += l;
		}
	*p = 0;
	*ret = s;
	return 0;
}

/* The text of parent's one child element called name; -ENOENT when absent. */
static inline int blobs_xml_child_text(const xmlNode *parent, const char *name, char **ret)
{
	xmlNode *c;
	int r = blobs_xml_child(parent, name, &c);
	if (r < 0)
		return r;
	return blobs_xml_text(c, ret);
}
