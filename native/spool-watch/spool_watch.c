/*
 * inotify on SPOOL_DIR with the events the spool acts on only (services/spool/watcher.ts).
 *
 * fs.watch asks the kernel for every kind of change (libuv's fixed mask: IN_ATTRIB, IN_MODIFY,
 * IN_DELETE, ...), so each step of a client's request (create, fchmod, write), the client's
 * removal of its result and every step of the spool's own publication woke the spool or ran a
 * JavaScript callback. What the spool acts on is a name appearing: the `request` lock (symlink,
 * or whatever a hostile client puts there) and a `.abandoned` marker, by creation or rename.
 * This watch asks for IN_CREATE and IN_MOVED_TO only, and enters JavaScript only for those names
 * (and for a lost-events overflow, or the directory itself going away).
 *
 * watch(dir: string, exact: string, suffix: string,
 *       onEvents: (names: string[], overflow: boolean, gone: boolean) => void,
 *       disappear?: boolean): { close(): void }
 * With `disappear`, names removed or renamed away (IN_DELETE, IN_MOVED_FROM) instead: what
 * etoken-ca-client waits for while another request holds the lock.
 * etoken-ca-client waits with the same watch on exactly its result's name: fs.watch's mask woke it
 * for every step of every request in the directory.
 *
 * openTmpfile(dir: string, mode: number): number
 *   An unnamed file in `dir` (O_TMPFILE, O_WRONLY, O_CLOEXEC): its creation and writes make no
 *   event in the directory, and a crash leaves nothing behind.
 * linkTmpfile(fd: number, path: string): void
 *   Gives such a file its name with linkat(2) (through /proc/self/fd, AT_SYMLINK_FOLLOW: an
 *   unprivileged process cannot use AT_EMPTY_PATH), which like link(2) never replaces a name
 *   (EEXIST): the spool publishes a result in one step, one IN_CREATE.
 * queueFlock(dir: string, onTurn: (code: string | null) => void): { held?: true, release(): void }
 *   Queues for flock(2) LOCK_EX on a description of `dir` itself (opened here O_RDONLY |
 *   O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC): the queue in front of the spool's `request` lock
 *   (services/common/spool-waiter.ts). Since Linux 4.20 a release wakes only the next waiter, in
 *   the order they queued (a flock call between the release and that waiter's retry still takes
 *   the lock first: docs/design.md); the `request` link's release woke every waiting client. The blocking
 *   flock (unless the lock is free: then `held` is
 *   true at once, and onTurn is never called) runs in a detached thread of its own (not libuv's pool: libuv joins its threads at exit,
 *   and one blocked in flock would hang the exit), which reports through a socketpair read on the
 *   event loop: onTurn(null) once the lock is ours, onTurn(errno name) if flock failed. release()
 *   frees the lock (closes the directory), or while still queued gives up the place: the thread
 *   closes the directory once its flock returns, and onTurn is not called. The process's exit
 *   frees both.
 * Each throws an Error with `code` (the errno name) when the call fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <limits.h>
#include <node_api.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define MAX_NAME 255
#define MAX_NAMES 64

typedef struct {
  uv_poll_t poll;
  int fd;
  int closed;      /* stopped: no more callbacks */
  int uv_closed;   /* libuv is done with the poll handle */
  int js_released; /* the JavaScript handle's close() was collected: nothing can call it any more */
  napi_env env;
  napi_ref callback;
  napi_async_context context;
  char exact[MAX_NAME + 1];
  size_t exact_length;
  char suffix[MAX_NAME + 1];
  size_t suffix_length;
} Watch;

static napi_value type_error(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static napi_value errno_error(napi_env env, const char *what, int err) {
  napi_value message, code, error;
  char text[256];
  snprintf(text, sizeof text, "%s: %s", what, strerror(err));
  napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, NULL, message, &error);
  const char *name = err == ENOENT ? "ENOENT" : err == EACCES ? "EACCES" : err == ENOTDIR ? "ENOTDIR" : err == EMFILE ? "EMFILE" : err == ENOSPC ? "ENOSPC"
                   : err == EEXIST ? "EEXIST" : err == EOPNOTSUPP ? "EOPNOTSUPP" : err == EISDIR ? "EISDIR" : err == EINVAL ? "EINVAL" : err == EPERM ? "EPERM"
                   : err == EBADF ? "EBADF" : err == EXDEV ? "EXDEV" : err == ENOMEM ? "ENOMEM" : err == ELOOP ? "ELOOP" : err == ENOLCK ? "ENOLCK"
                   : err == EAGAIN ? "EAGAIN" : "EIO";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_set_named_property(env, error, "code", code);
  napi_throw(env, error);
  return NULL;
}

/*
 * An object { <method>() } for JavaScript: the method gets `data`, the finalizer too once the
 * method is collected. The method, not the object: a method kept on its own (a bound or stored
 * release) outlives the object, and was called on freed memory when the object's collection
 * freed `data`; the object holds the method, so the method never goes first.
 */
static napi_value native_handle(napi_env env, const char *method, napi_callback fn, void *data, napi_finalize finalize) {
  napi_value handle, method_fn;
  napi_create_object(env, &handle);
  napi_create_function(env, method, NAPI_AUTO_LENGTH, fn, data, &method_fn);
  napi_set_named_property(env, handle, method, method_fn);
  napi_add_finalizer(env, method_fn, data, finalize, NULL, NULL);
  return handle;
}

/* Calls into JavaScript from the event loop; an exception there is the process's uncaught exception. */
static void call_back(napi_env env, napi_async_context context, napi_value callback, size_t argc, const napi_value *argv) {
  napi_value receiver, result;
  napi_get_global(env, &receiver); /* napi_make_callback needs an object */
  if (napi_make_callback(env, context, receiver, callback, argc, argv, &result) == napi_pending_exception) {
    napi_value error;
    napi_get_and_clear_last_exception(env, &error);
    napi_fatal_exception(env, error);
  }
}

static int wanted(const Watch *w, const char *name, size_t length) {
  if (length == w->exact_length && memcmp(name, w->exact, length) == 0) return 1;
  return w->suffix_length > 0 && length > w->suffix_length && memcmp(name + length - w->suffix_length, w->suffix, w->suffix_length) == 0;
}

/* The struct is freed once both libuv and JavaScript are done with it (close() may come after a stop). */
static void on_closed(uv_handle_t *handle) {
  Watch *w = (Watch *)handle->data;
  close(w->fd);
  w->uv_closed = 1;
  if (w->js_released) free(w);
}

static void stop(Watch *w) {
  if (w->closed) return;
  w->closed = 1;
  uv_poll_stop(&w->poll);
  napi_delete_reference(w->env, w->callback);
  napi_async_destroy(w->env, w->context);
  uv_close((uv_handle_t *)&w->poll, on_closed);
}

static void on_readable(uv_poll_t *poll, int status, int events) {
  (void)events;
  Watch *w = (Watch *)poll->data;
  if (w->closed) return;
  char buffer[16384] __attribute__((aligned(__alignof__(struct inotify_event))));
  char names[MAX_NAMES][MAX_NAME + 1];
  size_t count = 0;
  int overflow = status < 0, gone = 0;
  for (;;) {
    ssize_t n = read(w->fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break; /* EAGAIN: all read */
    for (char *p = buffer; p < buffer + n;) {
      const struct inotify_event *ev = (const struct inotify_event *)p;
      p += sizeof(struct inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) overflow = 1;
      if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT)) gone = 1;
      if (ev->len == 0) continue;
      size_t length = strnlen(ev->name, ev->len);
      if (length > MAX_NAME || !wanted(w, ev->name, length)) continue;
      if (count == MAX_NAMES) {
        overflow = 1; /* the caller rescans everything: nothing is lost */
        continue;
      }
      memcpy(names[count], ev->name, length);
      names[count][length] = 0;
      count++;
    }
  }
  if (count == 0 && !overflow && !gone) return; /* nothing the spool acts on: JavaScript is not entered */

  napi_env env = w->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, argv[3];
  napi_get_reference_value(env, w->callback, &callback);
  napi_create_array_with_length(env, count, &argv[0]);
  for (size_t i = 0; i < count; i++) {
    napi_value name;
    napi_create_string_latin1(env, names[i], NAPI_AUTO_LENGTH, &name);
    napi_set_element(env, argv[0], (uint32_t)i, name);
  }
  napi_get_boolean(env, overflow, &argv[1]);
  napi_get_boolean(env, gone, &argv[2]);
  if (gone) stop(w); /* the watch is gone with the directory: the caller falls back to its rescans */
  napi_async_context context = w->context;
  if (gone) context = NULL;
  if (context) call_back(env, context, callback, 3, argv);
  else {
    napi_async_context once;
    napi_value resource;
    napi_create_string_utf8(env, "SpoolWatch", NAPI_AUTO_LENGTH, &resource);
    napi_async_init(env, NULL, resource, &once);
    call_back(env, once, callback, 3, argv);
    napi_async_destroy(env, once);
  }
  napi_close_handle_scope(env, scope);
}

static void finalize_handle(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Watch *w = (Watch *)data;
  w->js_released = 1;
  if (!w->closed) stop(w);
  else if (w->uv_closed) free(w);
}

static napi_value close_watch(napi_env env, napi_callback_info info) {
  Watch *w = NULL;
  napi_get_cb_info(env, info, NULL, NULL, NULL, (void **)&w);
  if (w != NULL) stop(w);
  return NULL;
}

static int string_arg(napi_env env, napi_value value, char *out, size_t size, size_t *length) {
  return napi_get_value_string_utf8(env, value, out, size, length) == napi_ok && *length < size - 1;
}

static napi_value watch(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 4) return type_error(env, "watch(dir, exact, suffix, onEvents, disappear?): 4 or 5 arguments");
  bool disappear = false;
  if (argc == 5 && napi_get_value_bool(env, argv[4], &disappear) != napi_ok) return type_error(env, "disappear: a boolean");
  char dir[PATH_MAX];
  size_t dir_length = 0;
  if (!string_arg(env, argv[0], dir, sizeof dir, &dir_length) || dir_length == 0) return type_error(env, "dir: a non-empty path");
  Watch *w = calloc(1, sizeof *w);
  if (w == NULL) return errno_error(env, "inotify", ENOMEM);
  if (!string_arg(env, argv[1], w->exact, sizeof w->exact, &w->exact_length) || w->exact_length == 0 ||
      !string_arg(env, argv[2], w->suffix, sizeof w->suffix, &w->suffix_length)) {
    free(w);
    return type_error(env, "exact, suffix: file names");
  }
  napi_valuetype type;
  if (napi_typeof(env, argv[3], &type) != napi_ok || type != napi_function) {
    free(w);
    return type_error(env, "onEvents: a function");
  }
  w->fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (w->fd < 0) {
    int err = errno;
    free(w);
    return errno_error(env, "inotify_init1", err);
  }
  uint32_t names = disappear ? IN_DELETE | IN_MOVED_FROM : IN_CREATE | IN_MOVED_TO;
  if (inotify_add_watch(w->fd, dir, names | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_DONT_FOLLOW) < 0) {
    int err = errno;
    close(w->fd);
    free(w);
    return errno_error(env, "inotify_add_watch", err);
  }
  uv_loop_t *loop = NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &w->poll, w->fd) != 0) {
    close(w->fd);
    free(w);
    return errno_error(env, "uv_poll_init", EIO);
  }
  w->poll.data = w;
  w->env = env;
  napi_value resource;
  napi_create_string_utf8(env, "SpoolWatch", NAPI_AUTO_LENGTH, &resource);
  napi_async_init(env, NULL, resource, &w->context);
  napi_create_reference(env, argv[3], 1, &w->callback);
  uv_poll_start(&w->poll, UV_READABLE, on_readable);

  return native_handle(env, "close", close_watch, w, finalize_handle);
}

static napi_value open_tmpfile(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char dir[PATH_MAX];
  size_t dir_length = 0;
  uint32_t mode = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || !string_arg(env, argv[0], dir, sizeof dir, &dir_length) || dir_length == 0 ||
      napi_get_value_uint32(env, argv[1], &mode) != napi_ok || mode > 07777)
    return type_error(env, "openTmpfile(dir, mode): a directory and a file mode");
  int fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, (mode_t)mode);
  if (fd < 0) return errno_error(env, "open O_TMPFILE", errno);
  napi_value result;
  napi_create_int32(env, fd, &result);
  return result;
}

static napi_value link_tmpfile(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char target[PATH_MAX];
  size_t target_length = 0;
  int32_t fd = -1;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0 ||
      !string_arg(env, argv[1], target, sizeof target, &target_length) || target_length == 0)
    return type_error(env, "linkTmpfile(fd, path): a file descriptor and a path");
  char source[64];
  snprintf(source, sizeof source, "/proc/self/fd/%d", (int)fd);
  if (linkat(AT_FDCWD, source, AT_FDCWD, target, AT_SYMLINK_FOLLOW) != 0) return errno_error(env, "linkat", errno);
  return NULL;
}

/* queueFlock ---------------------------------------------------------------------------------- */

enum { TURN_WAITING, TURN_HELD, TURN_CANCELLED, TURN_DONE };

typedef struct {
  uv_poll_t poll;
  int dir_fd;
  int report[2];      /* [0] read on the loop, [1] written once by the thread */
  _Atomic int state;  /* who owns dir_fd: the thread while WAITING or CANCELLED, JavaScript once HELD */
  _Atomic int refs;   /* the thread, the poll handle, the JavaScript handle */
  int polling;
  napi_env env;
  napi_ref callback;
  napi_async_context context;
} Turn;

static void turn_unref(Turn *q) {
  if (atomic_fetch_sub(&q->refs, 1) == 1) free(q);
}

static void *turn_thread(void *arg) {
  Turn *q = (Turn *)arg;
  int r, err = 0;
  do r = flock(q->dir_fd, LOCK_EX);
  while (r < 0 && errno == EINTR);
  if (r < 0) err = errno;
  int expected = TURN_WAITING;
  if (err != 0 || !atomic_compare_exchange_strong(&q->state, &expected, TURN_HELD)) {
    close(q->dir_fd); /* failed, or nobody wants it any more: the lock passes on */
    if (err != 0) atomic_store(&q->state, TURN_DONE);
  }
  ssize_t n;
  do n = send(q->report[1], &err, sizeof err, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  close(q->report[1]);
  turn_unref(q);
  return NULL;
}

static void turn_poll_closed(uv_handle_t *handle) {
  Turn *q = (Turn *)handle->data;
  close(q->report[0]);
  turn_unref(q);
}

static void turn_stop_polling(Turn *q) {
  if (!q->polling) return;
  q->polling = 0;
  uv_poll_stop(&q->poll);
  napi_delete_reference(q->env, q->callback);
  napi_async_destroy(q->env, q->context);
  uv_close((uv_handle_t *)&q->poll, turn_poll_closed);
}

static void turn_reported(uv_poll_t *poll, int status, int events) {
  (void)status;
  (void)events;
  Turn *q = (Turn *)poll->data;
  if (!q->polling) return;
  int err = 0;
  ssize_t n;
  do n = recv(q->report[0], &err, sizeof err, MSG_DONTWAIT);
  while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return;
  /* No word (its send failed, only the end came): the state says what its flock did. HELD: the
   * lock is ours and ours to release; an EIO here left it held by a turn JavaScript dropped. */
  if (n != (ssize_t)sizeof err) err = atomic_load(&q->state) == TURN_HELD ? 0 : EIO;
  napi_env env = q->env;
  napi_handle_scope scope;
  if (napi_open_handle_scope(env, &scope) != napi_ok) return;
  napi_value callback, argv[1];
  napi_get_reference_value(env, q->callback, &callback);
  if (err == 0) napi_get_null(env, &argv[0]);
  else {
    /* the name errno_error gives it */
    napi_value e, code;
    errno_error(env, "flock", err);
    napi_get_and_clear_last_exception(env, &e);
    napi_get_named_property(env, e, "code", &code);
    argv[0] = code;
  }
  napi_async_context context = q->context;
  q->context = NULL;
  q->polling = 0; /* one answer only */
  uv_poll_stop(&q->poll);
  call_back(env, context, callback, 1, argv);
  napi_delete_reference(env, q->callback);
  napi_async_destroy(env, context);
  uv_close((uv_handle_t *)&q->poll, turn_poll_closed);
  napi_close_handle_scope(env, scope);
}

/* Frees the lock, or gives up the place in the queue; once only. */
static void turn_release(Turn *q) {
  int expected = TURN_WAITING;
  if (atomic_compare_exchange_strong(&q->state, &expected, TURN_CANCELLED)) {
    turn_stop_polling(q); /* the thread closes the directory once its flock returns */
    return;
  }
  if (expected == TURN_HELD && atomic_compare_exchange_strong(&q->state, &expected, TURN_DONE)) {
    turn_stop_polling(q); /* held but not reported yet: the answer is dropped */
    close(q->dir_fd);
  }
}

static napi_value release_turn(napi_env env, napi_callback_info info) {
  Turn *q = NULL;
  napi_get_cb_info(env, info, NULL, NULL, NULL, (void **)&q);
  if (q != NULL) turn_release(q);
  return NULL;
}

static void finalize_turn(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  Turn *q = (Turn *)data;
  turn_release(q);
  turn_unref(q);
}

static napi_value queue_flock(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char dir[PATH_MAX];
  size_t dir_length = 0;
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 || !string_arg(env, argv[0], dir, sizeof dir, &dir_length) || dir_length == 0 ||
      napi_typeof(env, argv[1], &type) != napi_ok || type != napi_function)
    return type_error(env, "queueFlock(dir, onTurn): a directory and a function");
  Turn *q = calloc(1, sizeof *q);
  if (q == NULL) return errno_error(env, "queueFlock", ENOMEM);
  q->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (q->dir_fd < 0) {
    int err = errno;
    free(q);
    return errno_error(env, "open", err);
  }
  /* Free now (no queue): held at once, without a thread or a turn of the event loop. */
  int r;
  do r = flock(q->dir_fd, LOCK_EX | LOCK_NB);
  while (r < 0 && errno == EINTR);
  if (r == 0 || errno != EWOULDBLOCK) {
    int err = r == 0 ? 0 : errno;
    if (err != 0) {
      close(q->dir_fd);
      free(q);
      return errno_error(env, "flock", err);
    }
    atomic_init(&q->state, TURN_HELD);
    atomic_init(&q->refs, 1);
    q->env = env;
    napi_value handle = native_handle(env, "release", release_turn, q, finalize_turn), held;
    napi_get_boolean(env, true, &held);
    napi_set_named_property(env, handle, "held", held);
    return handle;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, q->report) != 0) {
    int err = errno;
    close(q->dir_fd);
    free(q);
    return errno_error(env, "socketpair", err);
  }
  uv_loop_t *loop = NULL;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &q->poll, q->report[0]) != 0) {
    close(q->report[0]);
    close(q->report[1]);
    close(q->dir_fd);
    free(q);
    return errno_error(env, "uv_poll_init", EIO);
  }
  q->poll.data = q;
  atomic_init(&q->state, TURN_WAITING);
  atomic_init(&q->refs, 3);
  q->env = env;
  q->polling = 1;
  pthread_attr_t attr;
  pthread_t thread;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  /* The thread blocks every signal (it inherits the mask it is created with): a signal handled in
   * it interrupts flock, which leaves the queue and, restarted, joins it again at the end. The
   * main thread takes the process's signals. */
  sigset_t all, before;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &before);
  int err = pthread_create(&thread, &attr, turn_thread, q);
  pthread_sigmask(SIG_SETMASK, &before, NULL);
  pthread_attr_destroy(&attr);
  if (err != 0) {
    close(q->report[1]);
    close(q->dir_fd);
    q->polling = 0;
    atomic_store(&q->refs, 1);
    uv_close((uv_handle_t *)&q->poll, turn_poll_closed);
    return errno_error(env, "pthread_create", err);
  }
  napi_value resource;
  napi_create_string_utf8(env, "SpoolQueue", NAPI_AUTO_LENGTH, &resource);
  napi_async_init(env, NULL, resource, &q->context);
  napi_create_reference(env, argv[1], 1, &q->callback);
  uv_poll_start(&q->poll, UV_READABLE, turn_reported);

  return native_handle(env, "release", release_turn, q, finalize_turn);
}

NAPI_MODULE_INIT() {
  napi_value fn;
  napi_create_function(env, "watch", NAPI_AUTO_LENGTH, watch, NULL, &fn);
  napi_set_named_property(env, exports, "watch", fn);
  napi_create_function(env, "openTmpfile", NAPI_AUTO_LENGTH, open_tmpfile, NULL, &fn);
  napi_set_named_property(env, exports, "openTmpfile", fn);
  napi_create_function(env, "linkTmpfile", NAPI_AUTO_LENGTH, link_tmpfile, NULL, &fn);
  napi_set_named_property(env, exports, "linkTmpfile", fn);
  napi_create_function(env, "queueFlock", NAPI_AUTO_LENGTH, queue_flock, NULL, &fn);
  napi_set_named_property(env, exports, "queueFlock", fn);
  return exports;
}
