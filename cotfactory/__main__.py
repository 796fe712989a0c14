from cotfactory.cli import main

main()
