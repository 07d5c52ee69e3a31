/*
 * error.c - the library's one way to report a failure.
 *
 * libouro never prints and never exits. A function that fails records a
 * message here (per thread) and returns a status from enum ouro_status;
 * the program that called it prints ouro_errmsg() and exits with that
 * status, which every man page documents.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ouro.h"

static _Thread_local char errmsg[1024];

int ouro_fail(int status, const char *fmt, ...)
{
	char buf[sizeof errmsg];   /* the arguments may include ouro_errmsg() */
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	memcpy(errmsg, buf, sizeof errmsg);
	return status;
}

int ouro_refail(int status, const char *where)
{
	return ouro_fail(status, "%s: %s", where, ouro_errmsg());
}

const char *ouro_errmsg(void)
{
	return errmsg[0] ? errmsg : "unknown error";
}
