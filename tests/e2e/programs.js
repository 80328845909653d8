// program(name): the path of a program a test spawns, from tests/programs.txt
// (the one list of programs the suites spawn, which CI checks against what
// scripts/install-deps installs in a fresh Debian root). A name missing from
// the list throws at once, so a new program cannot slip past that check; a
// listed program that is not installed throws naming its package.
import { accessSync, constants, readFileSync } from 'node:fs'
import { delimiter, isAbsolute, join } from 'node:path'

const LIST = new URL('../programs.txt', import.meta.url)

const listed = new Map(
  readFileSync(LIST, 'utf8')
    .split('\n')
    .filter((line) => line.trim() && !line.startsWith('#'))
    .map((line) => line.trim().split(/\s+/))
    .map(([name, pkg]) => [name, pkg]),
)

function executable(path) {
  try {
    accessSync(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

export function program(name) {
  const pkg = listed.get(name)
  if (!pkg) throw new Error(`${name} is not in tests/programs.txt: add it there and to scripts/install-deps`)
  if (isAbsolute(name)) {
    if (executable(name)) return name
  } else {
    const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin']
    for (const dir of dirs) {
      if (dir && executable(join(dir, name))) return join(dir, name)
    }
  }
  throw new Error(`${name} is not installed (package ${pkg}): run scripts/install-deps`)
}
