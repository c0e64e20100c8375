/*
 * etoken-sim: a PKCS#11 module for tests that behaves like a USB token in a reader (a SafeNet
 * eToken class device) on top of a real module (SoftHSM2). It forwards every call to the real
 * module and adds what SoftHSM2 lacks, switched at run time by the test through a control file.
 * Test-only: built into dist/test/, never installed, never named by the production code.
 *
 * Environment (read at C_Initialize):
 *   ETOKEN_SIM_MODULE   the real module (default /usr/lib/softhsm/libsofthsm2.so)
 *   ETOKEN_SIM_CONTROL  the control file; unset or missing = a plain pass-through
 *
 * Control file: "key=value" lines ('#' comments), read at every call (the test replaces it by
 * rename); a missing file means the defaults:
 *   present=1|0        0: the reader is empty. Slots stay listed, C_GetSlotInfo clears
 *                      CKF_TOKEN_PRESENT, C_GetSlotList(TRUE) leaves them out, C_GetTokenInfo and
 *                      C_OpenSession answer CKR_TOKEN_NOT_PRESENT.
 *   insertion=N        counts insertions; a session opened under another value (or while the
 *                      token is out) answers CKR_DEVICE_REMOVED once, then
 *                      CKR_SESSION_HANDLE_INVALID; its real session is closed (the login goes).
 *   serial=S           the serial C_GetTokenInfo shows (another token; at most 16 characters)
 *   sign_ms=N          each C_Sign takes N ms more, one at a time per token across processes
 *                      (flock on the control file's directory), like a single-chip device
 *   init_ms=N finalize_ms=N   C_Initialize / C_Finalize take N ms more
 *   pin_max_tries=N    hardware PIN counter (0 = off, SoftHSM's flags pass through): after a
 *                      wrong user PIN CKF_USER_PIN_COUNT_LOW, one try left CKF_USER_PIN_FINAL_TRY,
 *                      none left CKF_USER_PIN_LOCKED and C_Login answers CKR_PIN_LOCKED even to
 *                      the right PIN. Failures are counted in <control>.pin (shared by processes;
 *                      the test resets it); a right PIN before the lock resets the count.
 *   sign_fault=N device_error | N general_error | N hang S
 *                      the Nth C_Sign this process makes after the value was set answers
 *                      CKR_DEVICE_ERROR / CKR_GENERAL_ERROR, or hangs S seconds and then
 *                      completes (even if the token was pulled meanwhile: the signature a
 *                      presence fence must catch)
 *   wait_error=device_error | general_error
 *                      C_WaitForSlotEvent answers CKR_DEVICE_ERROR / CKR_GENERAL_ERROR (a module
 *                      whose event call is broken)
 * C_WaitForSlotEvent (blocking or CKF_DONT_BLOCK) reports a change of present/insertion since
 * C_Initialize or the last event, as the first slot holding an initialised token.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <pkcs11/pkcs11.h>

#define DEFAULT_MODULE "/usr/lib/softhsm/libsofthsm2.so"
#define MAX_SESSIONS 1024
#define MAX_PATH_BYTES 4096
#define EVENT_POLL_MS 10

enum fault_kind { FAULT_NONE, FAULT_RV, FAULT_HANG };

struct control {
  int present;
  unsigned long insertion;
  char serial[17]; /* empty: the real module's */
  long sign_ms, init_ms, finalize_ms;
  long pin_max_tries;
  char fault_text[64];
  long fault_nth;
  enum fault_kind fault_kind;
  CK_RV fault_rv;
  long fault_hang_s;
  CK_RV wait_rv; /* CKR_OK: C_WaitForSlotEvent works */
};

enum session_state { SESSION_FREE, SESSION_LIVE, SESSION_GONE_UNREPORTED, SESSION_GONE_REPORTED };

struct session {
  CK_SESSION_HANDLE handle;
  unsigned long insertion;
  enum session_state state;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static CK_FUNCTION_LIST_PTR real;
static int initialised;
static char control_path[MAX_PATH_BYTES];
static char control_dir[MAX_PATH_BYTES]; /* flocked around a signature: the one chip */
static struct control ctl = {.present = 1};
static struct session sessions[MAX_SESSIONS];
static int event_present = 1; /* what the last event (or C_Initialize) reported */
static unsigned long event_insertion;
static long signs_since_fault_set;

static void sleep_ms(long ms) {
  if (ms <= 0) return;
  struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  while (nanosleep(&t, &t) == -1 && errno == EINTR) {
  }
}

static CK_RV parse_fault(const char *value, struct control *c) {
  long nth = 0, seconds = 0;
  char kind[32] = "";
  if (sscanf(value, "%ld %31s %ld", &nth, kind, &seconds) < 2 || nth < 1) return CKR_ARGUMENTS_BAD;
  c->fault_nth = nth;
  if (strcmp(kind, "device_error") == 0) {
    c->fault_kind = FAULT_RV;
    c->fault_rv = CKR_DEVICE_ERROR;
  } else if (strcmp(kind, "general_error") == 0) {
    c->fault_kind = FAULT_RV;
    c->fault_rv = CKR_GENERAL_ERROR;
  } else if (strcmp(kind, "hang") == 0 && seconds > 0) {
    c->fault_kind = FAULT_HANG;
    c->fault_hang_s = seconds;
  } else {
    return CKR_ARGUMENTS_BAD;
  }
  return CKR_OK;
}

/* Reads the control file into *c; an unknown key or bad value is reported once on stderr. */
static void read_control(struct control *c) {
  FILE *f = fopen(control_path, "r");
  if (f == NULL) return;
  char line[256];
  int lineno = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    lineno++;
    line[strcspn(line, "\r\n")] = '\0';
    if (line[0] == '#' || line[0] == '\0') continue;
    char *eq = strchr(line, '=');
    if (eq == NULL) goto bad;
    *eq = '\0';
    const char *key = line, *value = eq + 1;
    if (strcmp(key, "present") == 0) c->present = atoi(value) != 0;
    else if (strcmp(key, "insertion") == 0) c->insertion = strtoul(value, NULL, 10);
    else if (strcmp(key, "serial") == 0) {
      if (strlen(value) > 16) goto bad;
      strcpy(c->serial, value);
    } else if (strcmp(key, "sign_ms") == 0) c->sign_ms = atol(value);
    else if (strcmp(key, "init_ms") == 0) c->init_ms = atol(value);
    else if (strcmp(key, "finalize_ms") == 0) c->finalize_ms = atol(value);
    else if (strcmp(key, "pin_max_tries") == 0) c->pin_max_tries = atol(value);
    else if (strcmp(key, "sign_fault") == 0) {
      if (strlen(value) >= sizeof c->fault_text || parse_fault(value, c) != CKR_OK) goto bad;
      strcpy(c->fault_text, value);
    } else if (strcmp(key, "wait_error") == 0) {
      if (strcmp(value, "device_error") == 0) c->wait_rv = CKR_DEVICE_ERROR;
      else if (strcmp(value, "general_error") == 0) c->wait_rv = CKR_GENERAL_ERROR;
      else goto bad;
    } else goto bad;
    continue;
  bad:
    fprintf(stderr, "etoken-sim: %s line %d: expected key=value with a known key and value; line ignored\n", control_path, lineno);
  }
  fclose(f);
}

/* Called with the lock held: closes the real sessions of a token that went away. */
static void retire_stale_sessions(void) {
  for (int i = 0; i < MAX_SESSIONS; i++) {
    struct session *s = &sessions[i];
    if (s->state != SESSION_LIVE) continue;
    if (ctl.present && s->insertion == ctl.insertion) continue;
    real->C_CloseSession(s->handle);
    s->state = SESSION_GONE_UNREPORTED;
  }
}

/* Called with the lock held at the start of every call: follows the control file. It is read
 * afresh every time (a few microseconds): file times are too coarse to tell two quick writes
 * apart, and the test replaces the file by rename, so a read is never torn. */
static void sync_control(void) {
  if (control_path[0] == '\0') return;
  struct control next = {.present = 1};
  read_control(&next);
  if (strcmp(next.fault_text, ctl.fault_text) != 0) signs_since_fault_set = 0;
  ctl = next;
  if (real != NULL && initialised) retire_stale_sessions();
}

static struct session *find_session(CK_SESSION_HANDLE h) {
  for (int i = 0; i < MAX_SESSIONS; i++) {
    if (sessions[i].state != SESSION_FREE && sessions[i].handle == h) return &sessions[i];
  }
  return NULL;
}

static void remember_session(CK_SESSION_HANDLE h) {
  struct session *s = find_session(h);
  for (int i = 0; s == NULL && i < MAX_SESSIONS; i++) {
    if (sessions[i].state == SESSION_FREE) s = &sessions[i];
  }
  if (s == NULL) return; /* table full: the session simply never reports a removal */
  s->handle = h;
  s->insertion = ctl.insertion;
  s->state = SESSION_LIVE;
}

/* The gate of every call on a session: CKR_OK to forward, else what the caller answers. */
static CK_RV session_gate(CK_SESSION_HANDLE h) {
  CK_RV rv = CKR_OK;
  pthread_mutex_lock(&lock);
  if (real == NULL || !initialised) {
    rv = CKR_CRYPTOKI_NOT_INITIALIZED;
  } else {
    sync_control();
    struct session *s = find_session(h);
    if (s != NULL && s->state == SESSION_GONE_UNREPORTED) {
      s->state = SESSION_GONE_REPORTED;
      rv = CKR_DEVICE_REMOVED;
    } else if (s != NULL && s->state == SESSION_GONE_REPORTED) {
      rv = CKR_SESSION_HANDLE_INVALID;
    }
  }
  pthread_mutex_unlock(&lock);
  return rv;
}

/* The gate of every call on a slot's token: CKR_TOKEN_NOT_PRESENT while the reader is empty. */
static CK_RV token_gate(void) {
  CK_RV rv = CKR_OK;
  pthread_mutex_lock(&lock);
  if (real == NULL || !initialised) rv = CKR_CRYPTOKI_NOT_INITIALIZED;
  else {
    sync_control();
    if (!ctl.present) rv = CKR_TOKEN_NOT_PRESENT;
  }
  pthread_mutex_unlock(&lock);
  return rv;
}

static struct control snapshot(void) {
  pthread_mutex_lock(&lock);
  sync_control();
  struct control c = ctl;
  pthread_mutex_unlock(&lock);
  return c;
}

/* ---- PIN counter, shared by the processes using the token: <control>.pin ---------------- */

static int pin_file(int flags) {
  char path[MAX_PATH_BYTES + 8];
  snprintf(path, sizeof path, "%s.pin", control_path);
  return open(path, flags | O_CLOEXEC | O_NOFOLLOW, 0644);
}

static long pin_failures(void) {
  int fd = pin_file(O_RDONLY);
  if (fd < 0) return 0;
  char buf[32] = "";
  flock(fd, LOCK_SH);
  ssize_t n = read(fd, buf, sizeof buf - 1);
  flock(fd, LOCK_UN);
  close(fd);
  return n > 0 ? atol(buf) : 0;
}

static void set_pin_failures(long failures) {
  int fd = pin_file(O_RDWR | O_CREAT);
  if (fd < 0) {
    fprintf(stderr, "etoken-sim: cannot write %s.pin: %s\n", control_path, strerror(errno));
    return;
  }
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%ld\n", failures);
  flock(fd, LOCK_EX);
  if (ftruncate(fd, 0) != 0 || pwrite(fd, buf, (size_t)n, 0) != n) fprintf(stderr, "etoken-sim: cannot write the PIN counter\n");
  flock(fd, LOCK_UN);
  close(fd);
}

static CK_FLAGS pin_flags(long max_tries) {
  long failures = pin_failures();
  long left = max_tries - failures;
  CK_FLAGS f = 0;
  if (left <= 0) return CKF_USER_PIN_LOCKED;
  if (failures > 0) f |= CKF_USER_PIN_COUNT_LOW;
  if (left == 1) f |= CKF_USER_PIN_FINAL_TRY;
  return f;
}

/* ---- general ------------------------------------------------------------------------------ */

static CK_RV load_real(void) {
  if (real != NULL) return CKR_OK;
  const char *path = getenv("ETOKEN_SIM_MODULE");
  if (path == NULL || path[0] == '\0') path = DEFAULT_MODULE;
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    fprintf(stderr, "etoken-sim: cannot load %s: %s\n", path, dlerror());
    return CKR_GENERAL_ERROR;
  }
  CK_C_GetFunctionList get = (CK_C_GetFunctionList)dlsym(h, "C_GetFunctionList");
  if (get == NULL || get(&real) != CKR_OK || real == NULL) {
    fprintf(stderr, "etoken-sim: %s has no usable C_GetFunctionList\n", path);
    real = NULL;
    return CKR_GENERAL_ERROR;
  }
  return CKR_OK; /* never unloaded: modules keep threads and atexit handlers */
}

static CK_RV sim_C_Initialize(CK_VOID_PTR args) {
  pthread_mutex_lock(&lock);
  const char *cp = getenv("ETOKEN_SIM_CONTROL");
  snprintf(control_path, sizeof control_path, "%s", cp != NULL ? cp : "");
  snprintf(control_dir, sizeof control_dir, "%s", control_path);
  char *slash = strrchr(control_dir, '/');
  if (slash != NULL) *(slash == control_dir ? slash + 1 : slash) = '\0';
  else snprintf(control_dir, sizeof control_dir, ".");
  sync_control();
  long delay = ctl.init_ms;
  CK_RV rv = load_real();
  pthread_mutex_unlock(&lock);
  if (rv != CKR_OK) return rv;
  sleep_ms(delay);
  rv = real->C_Initialize(args);
  if (rv != CKR_OK) return rv;
  pthread_mutex_lock(&lock);
  initialised = 1;
  memset(sessions, 0, sizeof sessions);
  event_present = ctl.present;
  event_insertion = ctl.insertion;
  pthread_mutex_unlock(&lock);
  return CKR_OK;
}

static CK_RV sim_C_Finalize(CK_VOID_PTR reserved) {
  if (real == NULL) return CKR_CRYPTOKI_NOT_INITIALIZED;
  struct control c = snapshot();
  sleep_ms(c.finalize_ms);
  CK_RV rv = real->C_Finalize(reserved);
  pthread_mutex_lock(&lock);
  if (rv == CKR_OK) initialised = 0;
  memset(sessions, 0, sizeof sessions);
  pthread_mutex_unlock(&lock);
  return rv;
}

/* Its own manufacturerID (blank-padded, as PKCS#11 wants): a reader's module is not SoftHSM,
 * whose blocking C_WaitForSlotEvent the monitor knows to be missing (services/monitor). */
static CK_RV sim_C_GetInfo(CK_INFO_PTR info) {
  if (real == NULL) return CKR_CRYPTOKI_NOT_INITIALIZED;
  CK_RV rv = real->C_GetInfo(info);
  if (rv != CKR_OK) return rv;
  static const char maker[] = "etoken-sim";
  memset(info->manufacturerID, ' ', sizeof info->manufacturerID);
  memcpy(info->manufacturerID, maker, sizeof maker - 1);
  return CKR_OK;
}

/* ---- slots and tokens ---------------------------------------------------------------------- */

static CK_RV sim_C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR list, CK_ULONG_PTR count) {
  if (real == NULL) return CKR_CRYPTOKI_NOT_INITIALIZED;
  if (tokenPresent && token_gate() == CKR_TOKEN_NOT_PRESENT) {
    if (count == NULL) return CKR_ARGUMENTS_BAD;
    *count = 0;
    return CKR_OK;
  }
  return real->C_GetSlotList(tokenPresent, list, count);
}

static CK_RV sim_C_GetSlotInfo(CK_SLOT_ID slot, CK_SLOT_INFO_PTR info) {
  if (real == NULL) return CKR_CRYPTOKI_NOT_INITIALIZED;
  CK_RV gate = token_gate();
  CK_RV rv = real->C_GetSlotInfo(slot, info);
  if (rv == CKR_OK && gate == CKR_TOKEN_NOT_PRESENT) info->flags &= ~(CK_FLAGS)CKF_TOKEN_PRESENT;
  return rv;
}

static void pad_copy(CK_UTF8CHAR *field, size_t size, const char *value) {
  memset(field, ' ', size);
  memcpy(field, value, strlen(value) < size ? strlen(value) : size);
}

static CK_RV sim_C_GetTokenInfo(CK_SLOT_ID slot, CK_TOKEN_INFO_PTR info) {
  CK_RV rv = token_gate();
  if (rv != CKR_OK) return rv;
  rv = real->C_GetTokenInfo(slot, info);
  if (rv != CKR_OK) return rv;
  struct control c = snapshot();
  if (c.serial[0] != '\0') pad_copy(info->serialNumber, sizeof info->serialNumber, c.serial);
  if (c.pin_max_tries > 0) {
    info->flags &= ~(CK_FLAGS)(CKF_USER_PIN_COUNT_LOW | CKF_USER_PIN_FINAL_TRY | CKF_USER_PIN_LOCKED);
    info->flags |= pin_flags(c.pin_max_tries);
  }
  return CKR_OK;
}

static CK_RV sim_C_GetMechanismList(CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR list, CK_ULONG_PTR count) {
  CK_RV rv = token_gate();
  return rv != CKR_OK ? rv : real->C_GetMechanismList(slot, list, count);
}

static CK_RV sim_C_GetMechanismInfo(CK_SLOT_ID slot, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR info) {
  CK_RV rv = token_gate();
  return rv != CKR_OK ? rv : real->C_GetMechanismInfo(slot, type, info);
}

static CK_RV sim_C_InitToken(CK_SLOT_ID slot, CK_UTF8CHAR_PTR pin, CK_ULONG pinLen, CK_UTF8CHAR_PTR label) {
  CK_RV rv = token_gate();
  return rv != CKR_OK ? rv : real->C_InitToken(slot, pin, pinLen, label);
}

static CK_RV sim_C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR slot, CK_VOID_PTR reserved) {
  (void)reserved;
  if (slot == NULL) return CKR_ARGUMENTS_BAD;
  for (;;) {
    pthread_mutex_lock(&lock);
    if (real == NULL || !initialised) {
      pthread_mutex_unlock(&lock);
      return CKR_CRYPTOKI_NOT_INITIALIZED;
    }
    sync_control();
    if (ctl.wait_rv != CKR_OK) {
      CK_RV rv = ctl.wait_rv;
      pthread_mutex_unlock(&lock);
      return rv;
    }
    int changed = ctl.present != event_present || ctl.insertion != event_insertion;
    if (changed) {
      event_present = ctl.present;
      event_insertion = ctl.insertion;
    }
    pthread_mutex_unlock(&lock);
    if (changed) {
      CK_SLOT_ID ids[64];
      CK_ULONG n = 64;
      if (real->C_GetSlotList(CK_FALSE, ids, &n) != CKR_OK || n == 0) return CKR_GENERAL_ERROR;
      *slot = ids[0];
      for (CK_ULONG i = 0; i < n; i++) {
        CK_TOKEN_INFO ti;
        if (real->C_GetTokenInfo(ids[i], &ti) == CKR_OK && (ti.flags & CKF_TOKEN_INITIALIZED)) {
          *slot = ids[i];
          break;
        }
      }
      return CKR_OK;
    }
    if (flags & CKF_DONT_BLOCK) return CKR_NO_EVENT;
    sleep_ms(EVENT_POLL_MS);
  }
}

/* ---- sessions ------------------------------------------------------------------------------- */

static CK_RV sim_C_OpenSession(CK_SLOT_ID slot, CK_FLAGS flags, CK_VOID_PTR app, CK_NOTIFY notify, CK_SESSION_HANDLE_PTR session) {
  CK_RV rv = token_gate();
  if (rv != CKR_OK) return rv;
  rv = real->C_OpenSession(slot, flags, app, notify, session);
  if (rv != CKR_OK) return rv;
  pthread_mutex_lock(&lock);
  remember_session(*session);
  pthread_mutex_unlock(&lock);
  return CKR_OK;
}

static CK_RV sim_C_CloseSession(CK_SESSION_HANDLE h) {
  CK_RV rv = session_gate(h);
  if (rv == CKR_OK) rv = real->C_CloseSession(h);
  pthread_mutex_lock(&lock);
  struct session *s = find_session(h);
  if (s != NULL && (rv == CKR_OK || s->state == SESSION_GONE_REPORTED)) s->state = SESSION_FREE;
  pthread_mutex_unlock(&lock);
  return rv;
}

static CK_RV sim_C_CloseAllSessions(CK_SLOT_ID slot) {
  if (real == NULL) return CKR_CRYPTOKI_NOT_INITIALIZED;
  CK_RV rv = real->C_CloseAllSessions(slot);
  pthread_mutex_lock(&lock);
  memset(sessions, 0, sizeof sessions);
  pthread_mutex_unlock(&lock);
  return rv;
}

static CK_RV sim_C_Login(CK_SESSION_HANDLE h, CK_USER_TYPE user, CK_UTF8CHAR_PTR pin, CK_ULONG pinLen) {
  CK_RV rv = session_gate(h);
  if (rv != CKR_OK) return rv;
  struct control c = snapshot();
  int counted = user == CKU_USER && c.pin_max_tries > 0;
  long failures = counted ? pin_failures() : 0;
  if (counted && failures >= c.pin_max_tries) return CKR_PIN_LOCKED;
  rv = real->C_Login(h, user, pin, pinLen);
  if (counted && rv == CKR_PIN_INCORRECT) set_pin_failures(failures + 1);
  if (counted && rv == CKR_OK && failures > 0) set_pin_failures(0);
  return rv;
}

static CK_RV sim_C_Sign(CK_SESSION_HANDLE h, CK_BYTE_PTR data, CK_ULONG dataLen, CK_BYTE_PTR sig, CK_ULONG_PTR sigLen) {
  CK_RV rv = session_gate(h);
  if (rv != CKR_OK) return rv;
  if (sig == NULL) return real->C_Sign(h, data, dataLen, sig, sigLen); /* a length query */
  pthread_mutex_lock(&lock);
  sync_control();
  struct control c = ctl;
  long nth = ++signs_since_fault_set;
  pthread_mutex_unlock(&lock);
  enum fault_kind fault = c.fault_kind != FAULT_NONE && nth == c.fault_nth ? c.fault_kind : FAULT_NONE;

  int chip = control_path[0] != '\0' ? open(control_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  if (chip >= 0) flock(chip, LOCK_EX);
  sleep_ms(c.sign_ms);
  if (fault == FAULT_HANG) sleep_ms(c.fault_hang_s * 1000L);
  if (fault == FAULT_RV) {
    /* the failed C_Sign ends the operation, as PKCS#11 says: end the real one too */
    CK_BYTE scratch[8192];
    CK_ULONG scratchLen = sizeof scratch;
    real->C_Sign(h, data, dataLen, scratch, &scratchLen);
    rv = c.fault_rv;
  } else {
    rv = real->C_Sign(h, data, dataLen, sig, sigLen);
  }
  if (chip >= 0) close(chip);
  return rv;
}

/* Every other call on a session: the gate, then the real module. */
#define SESSION_CALL(name, params, args)       \
  static CK_RV sim_##name params {             \
    CK_RV rv = session_gate(hSession);         \
    return rv != CKR_OK ? rv : real->name args; \
  }

SESSION_CALL(C_InitPIN, (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR a, CK_ULONG b), (hSession, a, b))
SESSION_CALL(C_SetPIN, (CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR a, CK_ULONG b, CK_UTF8CHAR_PTR c, CK_ULONG d), (hSession, a, b, c, d))
SESSION_CALL(C_GetSessionInfo, (CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR a), (hSession, a))
SESSION_CALL(C_GetOperationState, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG_PTR b), (hSession, a, b))
SESSION_CALL(C_SetOperationState, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d), (hSession, a, b, c, d))
SESSION_CALL(C_Logout, (CK_SESSION_HANDLE hSession), (hSession))
SESSION_CALL(C_CreateObject, (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR a, CK_ULONG b, CK_OBJECT_HANDLE_PTR c), (hSession, a, b, c))
SESSION_CALL(C_CopyObject, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_DestroyObject, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE a), (hSession, a))
SESSION_CALL(C_GetObjectSize, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE a, CK_ULONG_PTR b), (hSession, a, b))
SESSION_CALL(C_GetAttributeValue, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (hSession, a, b, c))
SESSION_CALL(C_SetAttributeValue, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (hSession, a, b, c))
SESSION_CALL(C_FindObjectsInit, (CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR a, CK_ULONG b), (hSession, a, b))
SESSION_CALL(C_FindObjects, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR a, CK_ULONG b, CK_ULONG_PTR c), (hSession, a, b, c))
SESSION_CALL(C_FindObjectsFinal, (CK_SESSION_HANDLE hSession), (hSession))
SESSION_CALL(C_EncryptInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (hSession, a, b))
SESSION_CALL(C_Encrypt, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_EncryptUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_EncryptFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG_PTR b), (hSession, a, b))
SESSION_CALL(C_DecryptInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (hSession, a, b))
SESSION_CALL(C_Decrypt, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_DecryptUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_DecryptFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG_PTR b), (hSession, a, b))
SESSION_CALL(C_DigestInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a), (hSession, a))
SESSION_CALL(C_Digest, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_DigestUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b), (hSession, a, b))
SESSION_CALL(C_DigestKey, (CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE a), (hSession, a))
SESSION_CALL(C_DigestFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG_PTR b), (hSession, a, b))
SESSION_CALL(C_SignInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (hSession, a, b))
SESSION_CALL(C_SignUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b), (hSession, a, b))
SESSION_CALL(C_SignFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG_PTR b), (hSession, a, b))
SESSION_CALL(C_SignRecoverInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (hSession, a, b))
SESSION_CALL(C_SignRecover, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_VerifyInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (hSession, a, b))
SESSION_CALL(C_Verify, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG d), (hSession, a, b, c, d))
SESSION_CALL(C_VerifyUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b), (hSession, a, b))
SESSION_CALL(C_VerifyFinal, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b), (hSession, a, b))
SESSION_CALL(C_VerifyRecoverInit, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (hSession, a, b))
SESSION_CALL(C_VerifyRecover, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_DigestEncryptUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_DecryptDigestUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_SignEncryptUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_DecryptVerifyUpdate, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_GenerateKey, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE_PTR d), (hSession, a, b, c, d))
SESSION_CALL(C_GenerateKeyPair,
             (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_ATTRIBUTE_PTR d, CK_ULONG e, CK_OBJECT_HANDLE_PTR f,
              CK_OBJECT_HANDLE_PTR g),
             (hSession, a, b, c, d, e, f, g))
SESSION_CALL(C_WrapKey, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b, CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG_PTR e),
             (hSession, a, b, c, d, e))
SESSION_CALL(C_UnwrapKey,
             (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b, CK_BYTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f,
              CK_OBJECT_HANDLE_PTR g),
             (hSession, a, b, c, d, e, f, g))
SESSION_CALL(C_DeriveKey, (CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e),
             (hSession, a, b, c, d, e))
SESSION_CALL(C_SeedRandom, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b), (hSession, a, b))
SESSION_CALL(C_GenerateRandom, (CK_SESSION_HANDLE hSession, CK_BYTE_PTR a, CK_ULONG b), (hSession, a, b))
SESSION_CALL(C_GetFunctionStatus, (CK_SESSION_HANDLE hSession), (hSession))
SESSION_CALL(C_CancelFunction, (CK_SESSION_HANDLE hSession), (hSession))

static CK_RV sim_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list);

#define ENTRY(name) .name = sim_##name
static CK_FUNCTION_LIST functions = {
    .version = {CRYPTOKI_VERSION_MAJOR, CRYPTOKI_VERSION_MINOR},
    ENTRY(C_Initialize), ENTRY(C_Finalize), ENTRY(C_GetInfo), ENTRY(C_GetFunctionList), ENTRY(C_GetSlotList), ENTRY(C_GetSlotInfo),
    ENTRY(C_GetTokenInfo), ENTRY(C_GetMechanismList), ENTRY(C_GetMechanismInfo), ENTRY(C_InitToken), ENTRY(C_InitPIN), ENTRY(C_SetPIN),
    ENTRY(C_OpenSession), ENTRY(C_CloseSession), ENTRY(C_CloseAllSessions), ENTRY(C_GetSessionInfo), ENTRY(C_GetOperationState),
    ENTRY(C_SetOperationState), ENTRY(C_Login), ENTRY(C_Logout), ENTRY(C_CreateObject), ENTRY(C_CopyObject), ENTRY(C_DestroyObject),
    ENTRY(C_GetObjectSize), ENTRY(C_GetAttributeValue), ENTRY(C_SetAttributeValue), ENTRY(C_FindObjectsInit), ENTRY(C_FindObjects),
    ENTRY(C_FindObjectsFinal), ENTRY(C_EncryptInit), ENTRY(C_Encrypt), ENTRY(C_EncryptUpdate), ENTRY(C_EncryptFinal), ENTRY(C_DecryptInit),
    ENTRY(C_Decrypt), ENTRY(C_DecryptUpdate), ENTRY(C_DecryptFinal), ENTRY(C_DigestInit), ENTRY(C_Digest), ENTRY(C_DigestUpdate),
    ENTRY(C_DigestKey), ENTRY(C_DigestFinal), ENTRY(C_SignInit), ENTRY(C_Sign), ENTRY(C_SignUpdate), ENTRY(C_SignFinal),
    ENTRY(C_SignRecoverInit), ENTRY(C_SignRecover), ENTRY(C_VerifyInit), ENTRY(C_Verify), ENTRY(C_VerifyUpdate), ENTRY(C_VerifyFinal),
    ENTRY(C_VerifyRecoverInit), ENTRY(C_VerifyRecover), ENTRY(C_DigestEncryptUpdate), ENTRY(C_DecryptDigestUpdate),
    ENTRY(C_SignEncryptUpdate), ENTRY(C_DecryptVerifyUpdate), ENTRY(C_GenerateKey), ENTRY(C_GenerateKeyPair), ENTRY(C_WrapKey),
    ENTRY(C_UnwrapKey), ENTRY(C_DeriveKey), ENTRY(C_SeedRandom), ENTRY(C_GenerateRandom), ENTRY(C_GetFunctionStatus),
    ENTRY(C_CancelFunction), ENTRY(C_WaitForSlotEvent),
};

static CK_RV sim_C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  if (list == NULL) return CKR_ARGUMENTS_BAD;
  *list = &functions;
  return CKR_OK;
}

__attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list) {
  return sim_C_GetFunctionList(list);
}
