from edgemm.cli import main

main()
