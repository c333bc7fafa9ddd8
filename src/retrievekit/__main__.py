from retrievekit.cli.main import main

main()
