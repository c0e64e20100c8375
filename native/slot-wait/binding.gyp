{
  "targets": [
    {
      "target_name": "slot_wait",
      "sources": ["slot_wait.c"],
      "include_dirs": ["../../node_modules/pkcs11js/includes"],
      "cflags": ["-Wall", "-Wextra", "-Werror"],
      "libraries": ["-ldl", "-lpthread"]
    }
  ]
}
