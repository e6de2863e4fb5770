module oomdump.example/go-memory-leak

go 1.22
