/*
 * C_Login with the PIN in a Buffer, for the signer (services/signer/token.ts).
 *
 * pkcs11js 2.1.7 takes the PIN only as a JS string, which cannot be wiped, and copies it into a
 * native vector that is freed without being wiped. This calls C_Login on the session pkcs11js
 * opened, through the same loaded module (dlopen with RTLD_NOLOAD returns the instance pkcs11js
 * loaded, and PKCS#11 login state belongs to that instance), reading the PIN straight from the
 * caller's Buffer: no copy is made here, and the caller zeroes its Buffer after the call.
 *
 * login(modulePath: string, session: Buffer (CK_SESSION_HANDLE as pkcs11js holds it),
 *       userType: number, pin: Buffer): number   -- the CK_RV, 0 (CKR_OK) on success
 * Throws only for misuse: wrong argument types, or the module not loaded in this process.
 */
#include <dlfcn.h>
#include <node_api.h>
#include <string.h>
#include <pkcs11/pkcs11.h>

#define MAX_PATH_BYTES 4096
#define MAX_PIN_BYTES 256

static napi_value fail(napi_env env, const char *message) {
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static napi_value login(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4) return fail(env, "login(modulePath, session, userType, pin): 4 arguments");

  char path[MAX_PATH_BYTES];
  size_t pathLength = 0;
  if (napi_get_value_string_utf8(env, argv[0], path, sizeof path, &pathLength) != napi_ok || pathLength == 0 || pathLength >= sizeof path - 1) {
    return fail(env, "modulePath: a non-empty string");
  }

  bool isBuffer = false;
  void *sessionData = NULL;
  size_t sessionLength = 0;
  if (napi_is_buffer(env, argv[1], &isBuffer) != napi_ok || !isBuffer || napi_get_buffer_info(env, argv[1], &sessionData, &sessionLength) != napi_ok ||
      sessionLength != sizeof(CK_SESSION_HANDLE)) {
    return fail(env, "session: the Buffer pkcs11js returned from C_OpenSession");
  }
  CK_SESSION_HANDLE session;
  memcpy(&session, sessionData, sizeof session);

  uint32_t userType = 0;
  if (napi_get_value_uint32(env, argv[2], &userType) != napi_ok) return fail(env, "userType: a number");

  void *pinData = NULL;
  size_t pinLength = 0;
  if (napi_is_buffer(env, argv[3], &isBuffer) != napi_ok || !isBuffer || napi_get_buffer_info(env, argv[3], &pinData, &pinLength) != napi_ok || pinLength > MAX_PIN_BYTES) {
    return fail(env, "pin: a Buffer of at most 256 bytes");
  }

  void *module = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
  if (module == NULL) return fail(env, "the PKCS#11 module is not loaded in this process (open it with pkcs11js first)");
  CK_C_GetFunctionList getFunctionList = (CK_C_GetFunctionList)dlsym(module, "C_GetFunctionList");
  CK_FUNCTION_LIST_PTR functions = NULL;
  CK_RV rv = CKR_FUNCTION_FAILED;
  if (getFunctionList != NULL && getFunctionList(&functions) == CKR_OK && functions != NULL && functions->C_Login != NULL) {
    rv = functions->C_Login(session, (CK_USER_TYPE)userType, (CK_UTF8CHAR_PTR)pinData, (CK_ULONG)pinLength);
  }
  dlclose(module);

  napi_value result;
  napi_create_double(env, (double)rv, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "login", NAPI_AUTO_LENGTH, login, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "login", fn) != napi_ok) return NULL;
  return exports;
}
