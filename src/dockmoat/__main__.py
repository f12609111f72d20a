from dockmoat.cli import main

main()
