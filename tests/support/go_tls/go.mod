module netsonde.test/go_tls

go 1.26
