/*
 * The monitor's blocking C_WaitForSlotEvent in a native thread (services/monitor/slot-events.ts).
 *
 * pkcs11js calls are synchronous, so the wait cannot run on the event loop; a worker_thread ran
 * it before, but a worker is a whole V8 isolate with a libuv loop of its own (~10 MiB of RSS)
 * for a thread that only waits. This one is a detached pthread.
 *
 * waitForSlotEvent(modulePath: string, onResult: (rv: number, slotId: number) => void): void
 *   Takes the module the monitor's pkcs11js instance loaded from `modulePath`, the same copy
 *   (dlopen RTLD_NOLOAD: never a second one; throws when it is not loaded), and its function list
 *   (C_GetFunctionList, which needs no C_Initialize). It never initialises or finalises the
 *   module: the monitor does, with CKF_OS_LOCKING_OK. A thread of its own (not libuv's pool,
 *   which is joined at exit: a wait can last forever) calls C_WaitForSlotEvent(0), then drops
 *   its reference to the library (so the library stays mapped while the thread is inside) and
 *   reports through a socketpair read on the event loop: onResult(CK_RV, slot id). The report
 *   comes only after the thread has left the module, so the caller knows when it may exit or
 *   unload. A C_Finalize on another thread ends the wait (CKR_CRYPTOKI_NOT_INITIALIZED, as
 *   PKCS#11 says). Nothing ever cancels or kills the thread; the poll handle does not keep the
 *   loop alive, and a process that exits while the thread waits just ends it with the others.
 *   The thread is named etca-slot-wait and blocks every signal (they are Node's to handle, and
 *   a module need not expect EINTR). Throws an Error with `code` (an errno name) when it cannot
 *   start.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <node_api.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>
#include <pkcs11/pkcs11.h>

typedef struct {
  uv_poll_t poll;
  int report[2]; /* [0] read on the loop, [1] written once by the thread */
  void *library;  /* the thread's reference to the module: dlclose'd once it has left it */
  CK_C_WaitForSlotEvent wait;
  _Atomic int refs; /* the thread, the poll handle */
  napi_env env;
  napi_ref callback;
  napi_async_context context;
} Wait;

typedef struct {
  uint64_t rv;
  uint64_t slot;
} Report;

static napi_value fail(napi_env env, const char *code, const char *what, const char *detail) {
  napi_value message, code_value, error;
  char text[PATH_MAX + 256];
  snprintf(text, sizeof text, "%s: %s", what, detail);
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &error);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &code_value);
  napi_set_named_property(env, error, "code", code_value);
  napi_throw(env, error);
  return NULL;
}

static napi_value errno_fail(napi_env env, const char *what, int err) {
  return fail(env, err == ENOMEM ? "ENOMEM" : err == EAGAIN ? "EAGAIN" : err == EMFILE ? "EMFILE" : err == ENFILE ? "ENFILE" : "EIO", what, strerror(err));
}

static void wait_unref(Wait *w) {
  if (atomic_fetch_sub(&w->refs, 1) == 1) free(w);
}

static void *wait_thread(void *arg) {
  Wait *w = (Wait *)arg;
  Report r = {0, 0};
  CK_SLOT_ID slot = 0;
  r.rv = w->wait(0, &slot, NULL); /* flags 0: blocking */
  r.slot = slot;
  dlclose(w->library); /* out of the module: it may be unloaded now */
  ssize_t n;
  do n = send(w->report[1], &r, sizeof r, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  close(w->report[1]);
  wait_unref(w);
  return NULL;
}

static void poll_closed(uv_handle_t *handle) {
  Wait *w = (Wait *)handle->data;
  close(w->report[0]);
  wait_unref(w);
}

static void reported(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  Wait *w = (Wait *)poll->data;
  Report r;
  ssize_t n;
  do n = recv(w->report[0], &r, sizeof r, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return;
  if (n != (ssize_t)sizeof r) r = (Report){CKR_GENERAL_ERROR, 0}; /* the thread died without a word: cannot happen */
  uv_poll_stop(&w->poll);
  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) == napi_ok) {
    napi_value callback, receiver, result, argv[2];
    napi_get_reference_value(env, w->callback, &callback);
    napi_create_double(env, (double)r.rv, &argv[0]);
    napi_create_double(env, (double)r.slot, &argv[1]);
    napi_get_global(env, &receiver);
    if (napi_make_callback(env, w->context, receiver, callback, 2, argv, &result) == napi_pending_exception) {
      napi_value error;
      napi_get_and_clear_last_exception(env, &error);
      napi_fatal_exception(env, error);
    }
    napi_close_handle_scope(env, scope);
  }
  napi_delete_reference(env, w->callback);
  napi_async_destroy(env, w->context);
  uv_close((uv_handle_t *)&w->poll, poll_closed);
}

static napi_value wait_for_slot_event(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char path[PATH_MAX];
  size_t length = 0;
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_string_utf8(env, argv[0], path, sizeof path, &length) != napi_ok || length == 0 || length >= sizeof path - 1 ||
      napi_typeof(env, argv[1], &type) != napi_ok || type != napi_function) {
    napi_throw_type_error(env, NULL, "waitForSlotEvent(modulePath, onResult): a module's path and a function");
    return NULL;
  }
  /* the copy pkcs11js loaded, or none: this addon never loads a module itself */
  void *library = dlopen(path, RTLD_NOLOAD | RTLD_NOW | RTLD_LOCAL);
  if (library == NULL) return fail(env, "ENOENT", path, "not loaded in this process");
  CK_C_GetFunctionList get_list = (CK_C_GetFunctionList)dlsym(library, "C_GetFunctionList");
  CK_FUNCTION_LIST_PTR list = NULL;
  if (get_list == NULL || get_list(&list) != CKR_OK || list == NULL || list->C_WaitForSlotEvent == NULL) {
    dlclose(library);
    return fail(env, "EINVAL", path, "no C_GetFunctionList, or no C_WaitForSlotEvent in its list");
  }
  Wait *w = calloc(1, sizeof *w);
  if (w == NULL) {
    dlclose(library);
    return errno_fail(env, "waitForSlotEvent", ENOMEM);
  }
  w->library = library;
  w->wait = list->C_WaitForSlotEvent;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, w->report) != 0) {
    int err = errno;
    dlclose(library);
    free(w);
    return errno_fail(env, "socketpair", err);
  }
  uv_loop_t *loop = NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &w->poll, w->report[0]) != 0) {
    close(w->report[0]);
    close(w->report[1]);
    dlclose(library);
    free(w);
    return errno_fail(env, "uv_poll_init", EIO);
  }
  w->poll.data = w;
  w->env = env;
  atomic_init(&w->refs, 2);

  pthread_attr_t attr;
  pthread_t thread;
  sigset_t all, old;
  sigfillset(&all);
  pthread_attr_init(&attr);
  /* the default stack size: the module's code is not ours to budget; only touched pages cost */
  pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the thread */
  int err = pthread_create(&thread, &attr, wait_thread, w);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    close(w->report[1]);
    dlclose(library);
    atomic_store(&w->refs, 1);
    uv_close((uv_handle_t *)&w->poll, poll_closed);
    return errno_fail(env, "pthread_create", err);
  }
  /* named (and only then detached) here: named by itself, it could be seen unnamed in /proc for a moment */
  pthread_setname_np(thread, "etca-slot-wait");
  pthread_detach(thread);
  napi_value resource;
  napi_create_string_utf8(env, "SlotWait", NAPI_AUTO_LENGTH, &resource);
  napi_async_init(env, NULL, resource, &w->context);
  napi_create_reference(env, argv[1], 1, &w->callback);
  uv_poll_start(&w->poll, UV_READABLE, reported);
  uv_unref((uv_handle_t *)&w->poll); /* a wait may never end: it must not keep the process alive */
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "waitForSlotEvent", NAPI_AUTO_LENGTH, wait_for_slot_event, NULL, &fn);
  napi_set_named_property(env, exports, "waitForSlotEvent", fn);
  return exports;
}
