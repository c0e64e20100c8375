{
  "targets": [
    {
      "target_name": "pin_login",
      "sources": ["pin_login.c"],
      "include_dirs": ["../../node_modules/pkcs11js/includes"],
      "cflags": ["-Wall", "-Wextra", "-Werror"]
    }
  ]
}
