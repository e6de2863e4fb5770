module oomdump.local/bench/leaker

go 1.22
