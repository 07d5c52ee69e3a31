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

#include "ouro.h"

static _Thread_local char errmsg[1024];

int ouro_fail(int status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(errmsg, sizeof errmsg, fmt, ap);
	va_end(ap);
	return status;
}

const char *ouro_errmsg(void)
{
	return errmsg[0] ? errmsg : "unknown error";
}
