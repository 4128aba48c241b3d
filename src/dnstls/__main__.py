from dnstls.cli.main import run

run()
