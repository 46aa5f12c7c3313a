from examples.av_digits.cli import main

main()
