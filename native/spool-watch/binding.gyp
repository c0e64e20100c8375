{
  "targets": [
    {
      "target_name": "spool_watch",
      "sources": ["spool_watch.c"],
      "cflags": ["-Wall", "-Wextra", "-Werror"]
    }
  ]
}
